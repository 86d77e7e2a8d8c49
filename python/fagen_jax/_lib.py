"""Finding, loading and registering libfagen_jax (the XLA FFI handlers).

Search order for the handler library: $FAGEN_JAX_LIB; else libfagen_jax.so
beside $FAGEN_LIB; else the build folders of the repository this package
sits in (build-jax, build, build-gpu-jax, build-gpu), relative to the
working directory and to the repository root.  libfagen itself is found by
libfagen_jax's run path (both are built into one folder); $FAGEN_LIB, when
set, is loaded first so that its copy is the one used.
"""
import ctypes
import os
import threading

FWD_TARGET = "fagen_attention_fwd"
BWD_TARGET = "fagen_attention_bwd"
# Packed sequences: the same handlers under names that are not batch
# partitionable (their offsets are not split along a batch dim).
FWD_PACKED_TARGET = "fagen_attention_fwd_packed"
BWD_PACKED_TARGET = "fagen_attention_bwd_packed"

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BUILD_DIRS = ("build-jax", "build", "build-gpu-jax", "build-gpu")
_LIB_NAME = "libfagen_jax.so"

_lock = threading.Lock()
_state = {"lib": None, "error": None, "registered": False}


def candidates():
    """The paths tried for libfagen_jax, in order."""
    env = os.environ.get("FAGEN_JAX_LIB")
    if env:
        return [env]
    paths = []
    fagen_lib = os.environ.get("FAGEN_LIB")
    if fagen_lib:
        paths.append(os.path.join(os.path.dirname(os.path.abspath(fagen_lib)), _LIB_NAME))
    for base in (os.getcwd(), _REPO_ROOT):
        for d in _BUILD_DIRS:
            paths.append(os.path.join(base, d, _LIB_NAME))
    return list(dict.fromkeys(paths))


def _declare(lib):
    lib.fagen_jax_bwd_workspace_per_batch.restype = ctypes.c_int
    lib.fagen_jax_bwd_workspace_per_batch.argtypes = (
        [ctypes.c_int] * 8 + [ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_char_p,
                              ctypes.c_size_t])
    lib.fagen_jax_fagen_version.restype = ctypes.c_char_p
    lib.fagen_jax_fagen_version.argtypes = []


def load():
    """The loaded libfagen_jax (ctypes.CDLL); raises RuntimeError naming every
    path tried when none loads."""
    with _lock:
        if _state["lib"] is not None:
            return _state["lib"]
        if _state["error"] is not None:
            raise RuntimeError(_state["error"])
        fagen_lib = os.environ.get("FAGEN_LIB")
        errors = []
        try:
            if fagen_lib:
                ctypes.CDLL(fagen_lib, mode=ctypes.RTLD_GLOBAL)
            for path in candidates():
                if not os.path.exists(path):
                    errors.append(f"{path}: not found")
                    continue
                try:
                    lib = ctypes.CDLL(path)
                    _declare(lib)
                    _state["lib"] = lib
                    return lib
                except OSError as e:  # e.g. liblua5.4 or libfagen missing
                    errors.append(f"{path}: {e}")
        except OSError as e:
            errors.append(f"FAGEN_LIB={fagen_lib}: {e}")
        _state["error"] = ("fagen_jax: libfagen_jax could not be loaded (build it with CMake "
                           "where `python3 -c 'import jax.ffi'` works, or set FAGEN_JAX_LIB); "
                           "tried: " + "; ".join(errors))
        raise RuntimeError(_state["error"])


def available():
    """True when libfagen_jax loads (GPU or not)."""
    try:
        load()
        return True
    except RuntimeError:
        return False


def register():
    """Registers the forward and backward targets for the CUDA platform, once.
    All declare command-buffer compatibility (XLA may capture them into CUDA
    graphs): EXECUTE only launches, INSTANTIATE compiles.  The dense targets
    are also registered as batch partitionable (see _ffi)."""
    lib = load()
    with _lock:
        if _state["registered"]:
            return
        import jax
        # jaxlib's enum where it has one; its value is the C header's
        # XLA_FFI_HANDLER_TRAITS_COMMAND_BUFFER_COMPATIBLE (1) either way.
        try:
            from jaxlib import xla_client
            traits = xla_client.CustomCallTargetTraits.COMMAND_BUFFER_COMPATIBLE
        except (ImportError, AttributeError):
            traits = 1
        from . import _ffi
        for target, prefix, dense in ((FWD_TARGET, "fagen_jax_fwd", True),
                                      (BWD_TARGET, "fagen_jax_bwd", True),
                                      (FWD_PACKED_TARGET, "fagen_jax_fwd", False),
                                      (BWD_PACKED_TARGET, "fagen_jax_bwd", False)):
            bundle = {"instantiate": jax.ffi.pycapsule(getattr(lib, prefix + "_instantiate")),
                      "execute": jax.ffi.pycapsule(getattr(lib, prefix + "_execute"))}
            jax.ffi.register_ffi_target(target, bundle, platform="CUDA", traits=traits)
            if dense and _ffi.partitioned():
                jax.ffi.register_ffi_target_as_batch_partitionable(target)
        _state["registered"] = True


def bwd_workspace_per_batch(dtype_code, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, causal,
                            deterministic):
    """Bytes of backward workspace for one sequence (see fg_jax_attention.h)."""
    lib = load()
    n = ctypes.c_ulonglong(0)
    msg = ctypes.create_string_buffer(1024)
    st = lib.fagen_jax_bwd_workspace_per_batch(dtype_code, seqlen_q, seqlen_k, heads_q, heads_kv,
                                               head_dim, int(causal), int(deterministic),
                                               ctypes.byref(n), msg, len(msg))
    if st != 0:
        raise ValueError("fagen_jax: backward workspace: " + msg.value.decode(errors="replace"))
    return n.value
