"""fagen_jax.dot_product_attention: fagen's kernels as a JAX function.

Layout and argument names are jax.nn.dot_product_attention's: query
[B, T, N, H] (or [T, N, H]), key and value [B, S, K, H] with N a multiple of
K (GQA/MQA).  Forward and backward are XLA FFI calls into libfagen_jax; the
gradient is a jax.custom_vjp.  Everything that fagen cannot compute exactly
as asked is refused with a ValueError while tracing, never approximated.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import _lib

__all__ = ["dot_product_attention", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = ("bfloat16", "float16")
_DTYPE_CODE = {"float16": 0, "bfloat16": 1}  # enum fagen_dtype
MAX_HEAD_DIM = 256


def _fail(msg):
    raise ValueError("fagen_jax.dot_product_attention: " + msg)


def _window(local_window_size):
    """(left, right) from jax.nn's int or pair; None when no window."""
    if local_window_size is None:
        return None
    if isinstance(local_window_size, (int, np.integer)):
        left = right = int(local_window_size)
    else:
        try:
            left, right = (int(x) for x in local_window_size)
        except (TypeError, ValueError):
            _fail(f"local_window_size must be an int or a (left, right) pair, got "
                  f"{local_window_size!r}")
    if left < 0 or right < 0:
        _fail(f"local_window_size {(left, right)} has a negative extent")
    return left, right


class _Config:
    """The static part of a call (hashable: it is custom_vjp's nondiff arg)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self._key = tuple(sorted(kw.items()))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Config) and self._key == other._key

    def attrs(self):
        """The FFI attributes: every handler reads the same set."""
        i32, f32 = np.int32, np.float32
        return dict(causal=i32(self.causal), deterministic=i32(self.deterministic),
                    has_seqused_q=i32(self.has_q_lens), has_seqused_k=i32(self.has_kv_lens),
                    window=i32(self.window is not None),
                    window_left=i32(self.window[0] if self.window else -1),
                    window_right=i32(self.window[1] if self.window else -1),
                    scale=f32(self.scale), softcap=f32(self.softcap),
                    dtype=i32(_DTYPE_CODE[self.dtype]), batch=i32(self.batch),
                    seqlen_q=i32(self.seqlen_q), seqlen_k=i32(self.seqlen_k),
                    heads_q=i32(self.heads_q), heads_kv=i32(self.heads_kv),
                    head_dim=i32(self.head_dim))


def _check(query, key, value, bias, mask, scale, is_causal, q_lens, kv_lens, window, softcap,
           implementation, deterministic=False):
    """Validates a call (shapes, dtypes, features); returns the config."""
    if implementation not in (None, "fagen"):
        _fail(f"implementation={implementation!r}: this function is fagen's; use "
              "jax.nn.dot_product_attention for 'xla' or 'cudnn'")
    if bias is not None:
        _fail("bias arrays are not supported by fagen (use is_causal, local_window_size, "
              "query_seq_lengths / key_value_seq_lengths or softcap)")
    if mask is not None:
        _fail("mask arrays are not supported by fagen (use is_causal, local_window_size or "
              "query_seq_lengths / key_value_seq_lengths)")
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        _fail(f"query, key and value must be [B, T, N, H] (or [T, N, H]); got shapes "
              f"{query.shape}, {key.shape}, {value.shape}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if jnp.dtype(t.dtype).name not in SUPPORTED_DTYPES:
            _fail(f"{name} has dtype {t.dtype}; fagen takes bfloat16 or float16")
    if not (query.dtype == key.dtype == value.dtype):
        _fail(f"query, key and value must share one dtype; got {query.dtype}, {key.dtype}, "
              f"{value.dtype}")
    b, t, n, h = query.shape
    if key.shape != value.shape:
        _fail(f"key {key.shape} and value {value.shape} must have one shape")
    bk, s, k, hk = key.shape
    if bk != b or hk != h:
        _fail(f"query {query.shape} and key {key.shape} differ in batch or head dim")
    if k < 1 or n % k:
        _fail(f"query heads ({n}) must be a multiple of key/value heads ({k})")
    if h % 8 or h > MAX_HEAD_DIM:
        _fail(f"head dim {h} is not supported: fagen needs a multiple of 8 up to "
              f"{MAX_HEAD_DIM}")
    if min(b, t, s) < 1:
        _fail(f"empty shapes: query {query.shape}, key {key.shape}")
    if is_causal and t != s:
        _fail(f"is_causal with T={t} != S={s}: jax.nn aligns the causal mask top-left, fagen "
              "bottom-right (FlashAttention's convention); they agree only when T == S")
    if window is not None and t != s:
        _fail(f"local_window_size with T={t} != S={s}: jax.nn aligns windows top-left, fagen "
              "bottom-right; they agree only when T == S")
    if softcap is not None and not (float(softcap) > 0 and math.isfinite(float(softcap))):
        _fail(f"softcap must be a positive finite number, got {softcap!r}")
    if scale is not None and not (float(scale) > 0 and math.isfinite(float(scale))):
        _fail(f"scale must be a positive finite number, got {scale!r}")
    for name, lens in (("query_seq_lengths", q_lens), ("key_value_seq_lengths", kv_lens)):
        if lens is not None and (lens.shape != (b,) or not jnp.issubdtype(lens.dtype,
                                                                         jnp.integer)):
            _fail(f"{name} must be an integer array of shape ({b},), got {lens.dtype} "
                  f"{lens.shape}")
    if (is_causal or window is not None) and ((q_lens is None) != (kv_lens is None)):
        _fail("with is_causal or local_window_size, give both query_seq_lengths and "
              "key_value_seq_lengths (equal per sequence) or neither: fagen aligns masks to "
              "each sequence's own lengths, jax.nn to absolute positions")
    uses = [name for name, used in (("query_seq_lengths", q_lens is not None),
                                    ("key_value_seq_lengths", kv_lens is not None),
                                    ("local_window_size", window is not None),
                                    ("softcap", softcap is not None)) if used]
    if uses and not _lib.has_features():
        _fail(", ".join(uses) + " needs libfagen with feature support "
              "(fagen_attention_features); this libfagen_jax was built without it")
    return _Config(causal=bool(is_causal), deterministic=bool(deterministic),
                   has_q_lens=q_lens is not None, has_kv_lens=kv_lens is not None,
                   window=window, softcap=float(softcap or 0.0),
                   scale=float(scale) if scale is not None else 1.0 / math.sqrt(h),
                   dtype=jnp.dtype(query.dtype).name, batch=b, seqlen_q=t, seqlen_k=s,
                   heads_q=n, heads_kv=k, head_dim=h)


def _fwd_call(cfg, q, k, v, lens):
    lead = q.shape[:-3]
    out_types = (jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct(lead + (cfg.heads_q, cfg.seqlen_q), jnp.float32))
    # broadcast_all: under vmap the handler gets one more leading dim on every
    # operand and folds it into the batch (no sequential loop).
    call = jax.ffi.ffi_call(_lib.FWD_TARGET, out_types, vmap_method="broadcast_all")
    return call(q, k, v, *lens, **cfg.attrs())


def _bwd_call(cfg, q, k, v, o, lse, dout, lens):
    per_batch = _lib.bwd_workspace_per_batch(
        _DTYPE_CODE[cfg.dtype], cfg.seqlen_q, cfg.seqlen_k, cfg.heads_q, cfg.heads_kv,
        cfg.head_dim, cfg.causal, cfg.deterministic)
    lead = q.shape[:-3]
    out_types = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype),
                 # the scratch: an output XLA allocates, [lead..., bytes per sequence]
                 jax.ShapeDtypeStruct(lead + (max(per_batch, 16),), jnp.uint8))
    call = jax.ffi.ffi_call(_lib.BWD_TARGET, out_types, vmap_method="broadcast_all")
    dq, dk, dv, _ = call(q, k, v, o, lse, dout, *lens, **cfg.attrs())
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(cfg, q, k, v, lens):
    return _fwd_call(cfg, q, k, v, lens)


def _attention_fwd(cfg, q, k, v, lens):
    o, lse = _fwd_call(cfg, q, k, v, lens)
    return (o, lse), (q, k, v, o, lse, lens)


def _attention_bwd(cfg, res, cts):
    q, k, v, o, lse, lens = res
    dout, _ = cts  # the LSE output is returned under stop_gradient: its cotangent is 0
    dq, dk, dv = _bwd_call(cfg, q, k, v, o, lse, dout.astype(q.dtype), lens)
    return dq, dk, dv, tuple(None for _ in lens)


_attention.defvjp(_attention_fwd, _attention_bwd)


def _register():
    """Registers the FFI targets.  Without libfagen_jax, tracing, eval_shape and
    lowering still work off a GPU (the tests use that); on a GPU backend the
    load error is raised here."""
    try:
        _lib.register()
    except RuntimeError:
        if jax.default_backend() == "gpu":
            raise


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None,
                          is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None,
                          local_window_size=None, softcap=None, implementation=None,
                          return_residual=False, return_lse=False, deterministic=False):
    """Scaled dot-product attention with fagen's kernels (CUDA, bf16/fp16).

    Arguments as jax.nn.dot_product_attention; bias and mask arrays are not
    supported (ValueError).  Beyond it:
      softcap         scores become softcap * tanh(s / softcap) (Gemma 2)
      return_lse      also return the natural-log log-sum-exp of each query
                      row's scaled scores, float32 [B, T, N] (return_residual
                      is the same, under jax.nn's name); it carries no
                      gradient (stop_gradient)
      deterministic   bitwise reproducible gradients (slower backward)
    Masks follow jax.nn: is_causal and local_window_size=(left, right) let
    query i see key j iff i - left <= j <= i + right (and j <= i), which
    needs T == S; query_seq_lengths / key_value_seq_lengths mark padding.
    Differences from jax.nn, by design: query rows past their length, and
    rows that see no key, give 0 (jax.nn's xla path gives the mean of V).
    """
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    squeeze = query.ndim == 3
    if squeeze:
        if key.ndim != 3 or value.ndim != 3:
            _fail(f"query is [T, N, H] but key {key.shape} and value {value.shape} are not "
                  "[S, K, H]")
        query, key, value = query[None], key[None], value[None]
    q_lens = None if query_seq_lengths is None else jnp.asarray(query_seq_lengths)
    kv_lens = None if key_value_seq_lengths is None else jnp.asarray(key_value_seq_lengths)
    window = _window(local_window_size)
    cfg = _check(query, key, value, bias, mask, scale, is_causal, q_lens, kv_lens, window,
                 softcap, implementation, deterministic)
    _register()
    lens = tuple(x.astype(jnp.int32) for x in (q_lens, kv_lens) if x is not None)
    out, lse = _attention(cfg, query, key, value, lens)
    if squeeze:
        out, lse = out[0], lse[0]
    if not (return_lse or return_residual):
        return out
    # fagen writes [..., N, T]; jax.nn's residual is [..., T, N]
    return out, jax.lax.stop_gradient(jnp.swapaxes(lse, -1, -2))
