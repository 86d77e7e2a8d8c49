"""A small ctypes binding of libfagen's attention forward and backward.

For PyTorch tensors laid out [batch, seq, heads, head_dim] (bf16 or fp16, on
a CUDA device, head_dim contiguous); nothing is compiled here.  The structs
below mirror include/fagen.h field for field: keep them in step with it.

    from fagen_ctypes import Fagen
    fg = Fagen()                               # FAGEN_LIB, else build/libfagen.so, ...
    o, lse = fg.forward(q, k, v, causal=True)
    dq, dk, dv = fg.backward(q, k, v, o, lse, dout, causal=True)

Kernels are queued on torch's current stream of the tensors' device, so the
calls order with surrounding torch work like any torch operation.  torch is
imported only when a tensor call needs it: loading the library does not.
"""
import ctypes
import os

__all__ = ["Fagen", "FagenStrides", "FagenAttentionFeatures", "FagenAttentionArgs",
           "FagenAttentionBwdArgs",
           "find_library", "DTYPE_FP16", "DTYPE_BF16"]

# enum fagen_dtype (a C enum: passed as int).
DTYPE_FP16 = 0
DTYPE_BF16 = 1

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_LIBS = ("build/libfagen.so", "build-gpu/libfagen.so")


class FagenStrides(ctypes.Structure):
    """fagen_strides: element strides of a [batch, seq, heads, head_dim] tensor."""
    _fields_ = [("batch", ctypes.c_int64),
                ("seq", ctypes.c_int64),
                ("head", ctypes.c_int64)]


class FagenAttentionFeatures(ctypes.Structure):
    """fagen_attention_features (masks and score modifiers); all zero: none."""
    _fields_ = [("cu_seqlens_q", ctypes.c_void_p),  # const int32_t *, device
                ("cu_seqlens_k", ctypes.c_void_p),
                ("total_q", ctypes.c_int),
                ("total_k", ctypes.c_int),
                ("seqused_q", ctypes.c_void_p),
                ("seqused_k", ctypes.c_void_p),
                ("window", ctypes.c_int),
                ("window_left", ctypes.c_int),
                ("window_right", ctypes.c_int),
                ("softcap", ctypes.c_float),
                ("alibi_slopes", ctypes.c_void_p),  # const float *, device
                ("alibi_batch_stride", ctypes.c_int64),
                ("dropout_p", ctypes.c_float),
                ("dropout_seed", ctypes.c_uint64),
                ("dropout_offset", ctypes.c_uint64)]


# The leading fields both argument structs share: sizes, flags, scale, q, k, v, o.
_SHAPE_AND_INPUTS = [("dtype", ctypes.c_int),  # fagen_dtype
                     ("batch", ctypes.c_int),
                     ("seqlen_q", ctypes.c_int),
                     ("seqlen_k", ctypes.c_int),
                     ("heads_q", ctypes.c_int),
                     ("heads_kv", ctypes.c_int),
                     ("head_dim", ctypes.c_int),
                     ("causal", ctypes.c_int),
                     ("softmax_scale", ctypes.c_float),
                     ("q", ctypes.c_void_p),
                     ("k", ctypes.c_void_p),
                     ("v", ctypes.c_void_p),
                     ("o", ctypes.c_void_p)]


class FagenAttentionArgs(ctypes.Structure):
    """fagen_attention_args, in the header's field order."""
    _fields_ = _SHAPE_AND_INPUTS + [
                ("lse", ctypes.c_void_p),          # float *
                ("q_strides", FagenStrides),
                ("k_strides", FagenStrides),
                ("v_strides", FagenStrides),
                ("o_strides", FagenStrides),
                ("feat", FagenAttentionFeatures),  # zero: none
                ("variant", ctypes.c_void_p)]      # const fagen_variant *: None here


class FagenAttentionBwdArgs(ctypes.Structure):
    """fagen_attention_bwd_args, in the header's field order."""
    _fields_ = _SHAPE_AND_INPUTS + [
                ("dout", ctypes.c_void_p),
                ("lse", ctypes.c_void_p),          # const float *
                ("dq", ctypes.c_void_p),
                ("dk", ctypes.c_void_p),
                ("dv", ctypes.c_void_p),
                ("q_strides", FagenStrides),
                ("k_strides", FagenStrides),
                ("v_strides", FagenStrides),
                ("o_strides", FagenStrides),
                ("dout_strides", FagenStrides),
                ("dq_strides", FagenStrides),
                ("dk_strides", FagenStrides),
                ("dv_strides", FagenStrides),
                ("feat", FagenAttentionFeatures),  # zero: none
                ("deterministic", ctypes.c_int),
                ("workspace", ctypes.c_void_p),
                ("workspace_bytes", ctypes.c_size_t),
                ("variant", ctypes.c_void_p)]      # const fagen_variant *: None here


def find_library(lib_path=None):
    """The path of libfagen to load: lib_path, else $FAGEN_LIB, else the first
    of build/libfagen.so and build-gpu/libfagen.so that exists (relative to
    the working directory, then to the repository root)."""
    if lib_path:
        return lib_path
    env = os.environ.get("FAGEN_LIB")
    if env:
        return env
    tried = []
    for rel in _DEFAULT_LIBS:
        for base in (os.getcwd(), _REPO_ROOT):
            path = os.path.join(base, rel)
            if os.path.exists(path):
                return path
            tried.append(path)
    raise RuntimeError("libfagen not found (tried " + ", ".join(dict.fromkeys(tried)) +
                       "); pass its path or set FAGEN_LIB")


def _declare(lib):
    """Sets argtypes/restype of the functions used here (64-bit pointers must
    not go through ctypes' default int conversion)."""
    vp, st = ctypes.c_void_p, ctypes.c_int
    sigs = {
        "fagen_version": (ctypes.c_char_p, []),
        "fagen_status_name": (ctypes.c_char_p, [st]),
        "fagen_last_error": (ctypes.c_char_p, []),
        "fagen_ctx_create": (st, [ctypes.POINTER(vp)]),
        "fagen_ctx_destroy": (None, [vp]),
        "fagen_errmsg": (ctypes.c_char_p, [vp]),
        "fagen_compile_log": (ctypes.c_char_p, [vp]),
        "fagen_attention_args_init": (None, [ctypes.POINTER(FagenAttentionArgs)]),
        "fagen_attention_forward": (st, [vp, ctypes.POINTER(FagenAttentionArgs), vp]),
        "fagen_attention_bwd_args_init": (None, [ctypes.POINTER(FagenAttentionBwdArgs)]),
        "fagen_attention_backward_workspace":
            (st, [vp, ctypes.POINTER(FagenAttentionBwdArgs), ctypes.POINTER(ctypes.c_size_t)]),
        "fagen_attention_backward": (st, [vp, ctypes.POINTER(FagenAttentionBwdArgs), vp]),
        "fagen_variant_parse": (st, [ctypes.c_char_p, vp]),
        "fagen_variant_validate": (st, [vp, ctypes.c_char_p, ctypes.c_size_t]),
        "fagen_compile": (st, [vp, vp, vp]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _strides(t):
    """fagen_strides of a [B, S, H, D] tensor (element strides; D contiguous)."""
    if t.dim() != 4:
        raise ValueError(f"expected a [batch, seq, heads, head_dim] tensor, got shape "
                         f"{tuple(t.shape)}")
    s = t.stride()
    if s[3] != 1:
        raise ValueError(f"the head_dim axis must be contiguous (stride 1), got strides {s}")
    return FagenStrides(s[0], s[1], s[2])


def _dtype_code(t):
    import torch
    codes = {torch.bfloat16: DTYPE_BF16, torch.float16: DTYPE_FP16}
    if t.dtype not in codes:
        raise ValueError(f"fagen takes bf16 or fp16 tensors, got {t.dtype}")
    return codes[t.dtype]


def _check_same(name, t, ref, shape):
    """t must be a CUDA tensor of ref's dtype and device with the given shape."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype != ref.dtype or t.device != ref.device:
        raise ValueError(f"{name} is {t.dtype} on {t.device}, expected {ref.dtype} on "
                         f"{ref.device}")


class Fagen:
    """One fagen context (its kernel cache and error state) over one libfagen."""

    def __init__(self, lib_path=None):
        self.lib_path = find_library(lib_path)
        self.lib = ctypes.CDLL(self.lib_path)
        _declare(self.lib)
        self._ctx = None
        ctx = ctypes.c_void_p()
        st = self.lib.fagen_ctx_create(ctypes.byref(ctx))
        if st != 0:
            msg = (self.lib.fagen_last_error() or b"").decode(errors="replace")
            raise RuntimeError(f"fagen_ctx_create: {self.status_name(st)}: {msg}")
        self._ctx = ctx
        self._workspace = {}  # device -> the cached uint8 workspace tensor

    # -- lifetime ---------------------------------------------------------

    def close(self):
        """Destroys the context (its loaded kernels).  Safe to call twice."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        self._workspace = {}
        if ctx:
            self.lib.fagen_ctx_destroy(ctx)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- helpers ----------------------------------------------------------

    def version(self):
        return self.lib.fagen_version().decode()

    def status_name(self, st):
        return (self.lib.fagen_status_name(st) or b"FAGEN_UNKNOWN").decode()

    def _check(self, st, what):
        """Raises RuntimeError for a failed status, with fagen's message (and
        the NVRTC log of a failed compile)."""
        if st == 0:
            return
        msg = (self.lib.fagen_errmsg(self._ctx) or b"").decode(errors="replace")
        text = f"{what}: {self.status_name(st)}: {msg}"
        if self.status_name(st) == "FAGEN_E_COMPILE":
            log = (self.lib.fagen_compile_log(self._ctx) or b"").decode(errors="replace")
            if log:
                text += "\n" + log
        raise RuntimeError(text)

    def _live_ctx(self):
        if not self._ctx:
            raise RuntimeError("this Fagen object is closed")
        return self._ctx

    @staticmethod
    def _stream(device, stream):
        """A CUstream handle: stream as given (an int handle or a torch
        stream), else torch's current stream of device."""
        import torch
        if stream is None:
            stream = torch.cuda.current_stream(device)
        if hasattr(stream, "cuda_stream"):
            stream = stream.cuda_stream
        return ctypes.c_void_p(int(stream) or None)

    @staticmethod
    def _sizes(q, k, v):
        """(batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim) of
        [B, S, H, D] tensors q, k, v; k and v must have one shape."""
        if q.dim() != 4 or k.dim() != 4 or tuple(k.shape) != tuple(v.shape):
            raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: "
                             "expected [B, S, H, D] tensors with k and v of one shape")
        if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
            raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch "
                             "or head_dim")
        if not q.is_cuda:
            raise ValueError("fagen needs CUDA tensors")
        for name, t in (("k", k), ("v", v)):
            if t.dtype != q.dtype or t.device != q.device:
                raise ValueError(f"{name} is {t.dtype} on {t.device}, q is {q.dtype} on "
                                 f"{q.device}")
        b, sq, hq, d = q.shape
        return b, sq, k.shape[1], hq, k.shape[2], d

    # -- attention --------------------------------------------------------

    def forward(self, q, k, v, causal, scale=0.0, out=None, lse=None, stream=None):
        """O = softmax(scale * Q K^T [+ causal mask]) V for [B, S, H, D]
        tensors (k, v may have fewer heads: GQA).  Returns (o, lse): o shaped
        like q (allocated contiguous unless out is given), lse fp32
        [B, Hq, Sq] contiguous.  scale 0 means 1/sqrt(head_dim)."""
        import torch
        b, sq, sk, hq, hkv, d = self._sizes(q, k, v)
        if out is None:
            out = torch.empty((b, sq, hq, d), dtype=q.dtype, device=q.device)
        _check_same("out", out, q, q.shape)
        if lse is None:
            lse = torch.empty((b, hq, sq), dtype=torch.float32, device=q.device)
        if (tuple(lse.shape) != (b, hq, sq) or lse.dtype != torch.float32
                or not lse.is_contiguous() or lse.device != q.device):
            raise ValueError("lse must be a contiguous fp32 [B, Hq, Sq] tensor on q's device")

        a = FagenAttentionArgs()
        self.lib.fagen_attention_args_init(ctypes.byref(a))
        a.dtype = _dtype_code(q)
        a.batch, a.seqlen_q, a.seqlen_k = b, sq, sk
        a.heads_q, a.heads_kv, a.head_dim = hq, hkv, d
        a.causal = 1 if causal else 0
        a.softmax_scale = float(scale)
        a.q, a.k, a.v, a.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
        a.lse = lse.data_ptr()
        a.q_strides, a.k_strides, a.v_strides = _strides(q), _strides(k), _strides(v)
        a.o_strides = _strides(out)
        a.variant = None
        with torch.cuda.device(q.device):  # fagen runs in the current CUDA context
            st = self.lib.fagen_attention_forward(self._live_ctx(), ctypes.byref(a),
                                                  self._stream(q.device, stream))
        self._check(st, "fagen_attention_forward")
        return out, lse

    def _bwd_args(self, q, k, v, causal, scale, deterministic):
        """A fagen_attention_bwd_args with the sizes of q, k, v (no pointers)."""
        b, sq, sk, hq, hkv, d = self._sizes(q, k, v)
        a = FagenAttentionBwdArgs()
        self.lib.fagen_attention_bwd_args_init(ctypes.byref(a))
        a.dtype = _dtype_code(q)
        a.batch, a.seqlen_q, a.seqlen_k = b, sq, sk
        a.heads_q, a.heads_kv, a.head_dim = hq, hkv, d
        a.causal = 1 if causal else 0
        a.softmax_scale = float(scale)
        a.deterministic = 1 if deterministic else 0
        a.variant = None
        return a

    def backward_workspace_bytes(self, q, k, v, causal, scale=0.0, deterministic=False):
        """fagen_attention_backward_workspace() for these tensors' sizes."""
        a = self._bwd_args(q, k, v, causal, scale, deterministic)
        n = ctypes.c_size_t(0)
        st = self.lib.fagen_attention_backward_workspace(self._live_ctx(), ctypes.byref(a),
                                                         ctypes.byref(n))
        self._check(st, "fagen_attention_backward_workspace")
        return n.value

    def _cached_workspace(self, device, nbytes):
        """A uint8 CUDA buffer of at least nbytes, kept between calls so that
        timing loops do not allocate.  One buffer per device, replaced by a
        larger one when a call needs more.  It is meant for calls on one
        stream (the workspace of a call must not be reused before that call
        has finished): pass workspace= explicitly when using several."""
        import torch
        buf = self._workspace.get(device)
        if buf is None or buf.numel() < nbytes:
            self._workspace.pop(device, None)
            buf = torch.empty(max(nbytes, 16), dtype=torch.uint8, device=device)
            self._workspace[device] = buf
        return buf

    def variant(self, name):
        """A fagen_variant (as an opaque ctypes buffer) parsed from its name,
        for backward(variant=...); raises ValueError when the name does not
        parse or the variant is invalid (the reason in the message)."""
        buf = ctypes.create_string_buffer(64)  # sizeof(fagen_variant) is 48
        if self.lib.fagen_variant_parse(name.encode(), buf) != 0:
            raise ValueError(self.lib.fagen_last_error().decode())
        why = ctypes.create_string_buffer(512)
        if self.lib.fagen_variant_validate(buf, why, len(why)) != 0:
            raise ValueError(f"{name}: {why.value.decode()}")
        return buf

    def compile(self, variant):
        """Compiles a variant from variant() into the kernel cache (thread-safe;
        ctypes releases the GIL, so threads compile in parallel)."""
        self._check(self.lib.fagen_compile(self._live_ctx(), variant, None), "fagen_compile")

    def backward(self, q, k, v, o, lse, dout, causal, scale=0.0, deterministic=False,
                 workspace=None, dq=None, dk=None, dv=None, stream=None, variant=None):
        """dQ, dK, dV of attention for dO = dout, given the forward's o and lse
        (from forward() with the same q, k, v, causal and scale).  Returns
        (dq, dk, dv), allocated contiguous unless given (dq shaped like q, dk
        and dv like k).  workspace: a CUDA tensor of at least
        backward_workspace_bytes() bytes, 16-byte aligned; None uses a buffer
        cached on this object.  variant: from variant(), to force a kernel."""
        import torch
        b, sq, sk, hq, hkv, d = self._sizes(q, k, v)
        _check_same("o", o, q, q.shape)
        _check_same("dout", dout, q, q.shape)
        if (tuple(lse.shape) != (b, hq, sq) or lse.dtype != torch.float32
                or not lse.is_contiguous() or lse.device != q.device):
            raise ValueError("lse must be a contiguous fp32 [B, Hq, Sq] tensor on q's device")
        dq = torch.empty((b, sq, hq, d), dtype=q.dtype, device=q.device) if dq is None else dq
        dk = torch.empty((b, sk, hkv, d), dtype=q.dtype, device=q.device) if dk is None else dk
        dv = torch.empty((b, sk, hkv, d), dtype=q.dtype, device=q.device) if dv is None else dv
        _check_same("dq", dq, q, q.shape)
        _check_same("dk", dk, q, k.shape)
        _check_same("dv", dv, q, k.shape)

        a = self._bwd_args(q, k, v, causal, scale, deterministic)
        if workspace is None:
            need = ctypes.c_size_t(0)
            st = self.lib.fagen_attention_backward_workspace(self._live_ctx(), ctypes.byref(a),
                                                             ctypes.byref(need))
            self._check(st, "fagen_attention_backward_workspace")
            workspace = self._cached_workspace(q.device, need.value)
        if workspace.device != q.device or not workspace.is_contiguous():
            raise ValueError(f"the workspace must be a contiguous tensor on {q.device}")
        a.q, a.k, a.v = q.data_ptr(), k.data_ptr(), v.data_ptr()
        a.o, a.dout, a.lse = o.data_ptr(), dout.data_ptr(), lse.data_ptr()
        a.dq, a.dk, a.dv = dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
        a.q_strides, a.k_strides, a.v_strides = _strides(q), _strides(k), _strides(v)
        a.o_strides, a.dout_strides = _strides(o), _strides(dout)
        a.dq_strides, a.dk_strides, a.dv_strides = _strides(dq), _strides(dk), _strides(dv)
        a.workspace = workspace.data_ptr()
        a.workspace_bytes = workspace.numel() * workspace.element_size()
        if variant is not None:  # a buffer from variant(): run exactly that kernel
            a.variant = ctypes.cast(variant, ctypes.c_void_p)
        with torch.cuda.device(q.device):
            st = self.lib.fagen_attention_backward(self._live_ctx(), ctypes.byref(a),
                                                   self._stream(q.device, stream))
        self._check(st, "fagen_attention_backward")
        return dq, dk, dv
