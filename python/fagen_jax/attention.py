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

from . import _ffi, _lib

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
        u64 = np.uint64
        return dict(causal=i32(self.causal), deterministic=i32(self.deterministic),
                    has_seqused_q=i32(self.has_q_lens), has_seqused_k=i32(self.has_kv_lens),
                    packed=i32(self.packed), total_q=i32(self.total_q),
                    total_k=i32(self.total_k), has_alibi=i32(self.has_alibi),
                    dropout_p=f32(self.dropout_p),
                    # 64-bit values as int64 bit patterns (the handler reads them back)
                    dropout_seed=u64(self.dropout_seed).view(np.int64),
                    dropout_offset=u64(self.dropout_offset).view(np.int64),
                    window=i32(self.window is not None),
                    window_left=i32(self.window[0] if self.window else -1),
                    window_right=i32(self.window[1] if self.window else -1),
                    scale=f32(self.scale), softcap=f32(self.softcap),
                    dtype=i32(_DTYPE_CODE[self.dtype]), batch=i32(self.batch),
                    seqlen_q=i32(self.seqlen_max_q), seqlen_k=i32(self.seqlen_max_k),
                    heads_q=i32(self.heads_q), heads_kv=i32(self.heads_kv),
                    head_dim=i32(self.head_dim))


def _check(query, key, value, bias, mask, scale, is_causal, q_lens, kv_lens, window, softcap,
           implementation, deterministic=False, packed=None, alibi=None, dropout=None):
    """Validates a call (shapes, dtypes, features); returns the config.
    packed: None or _Packed; alibi: None or the slopes array; dropout: None or
    (rate, seed, offset), already checked by _dropout."""
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
    if packed is not None:
        b = packed.n_seq  # the batch of the kernels: one entry per sequence
    if is_causal and t != s and packed is None:
        _fail(f"is_causal with T={t} != S={s}: jax.nn aligns the causal mask top-left, fagen "
              "bottom-right (FlashAttention's convention); they agree only when T == S")
    if window is not None and t != s and packed is None:
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
    if alibi is not None:
        if not jnp.issubdtype(alibi.dtype, jnp.floating) or alibi.shape not in ((n,), (b, n)):
            _fail(f"alibi_slopes must be a float array of shape ({n},) or ({b}, {n}), got "
                  f"{alibi.dtype} {alibi.shape}")
        if packed is None and t != s:
            _fail(f"alibi_slopes with T={t} != S={s}: fagen aligns the bias bottom-right "
                  "(slope * (j - i - (S - T))); give T == S or use packed sequences")
    if (is_causal or window is not None) and ((q_lens is None) != (kv_lens is None)):
        _fail("with is_causal or local_window_size, give both query_seq_lengths and "
              "key_value_seq_lengths (equal per sequence) or neither: fagen aligns masks to "
              "each sequence's own lengths, jax.nn to absolute positions")
    return _Config(causal=bool(is_causal), deterministic=bool(deterministic),
                   has_q_lens=q_lens is not None, has_kv_lens=kv_lens is not None,
                   window=window, softcap=float(softcap or 0.0),
                   scale=float(scale) if scale is not None else 1.0 / math.sqrt(h),
                   dtype=jnp.dtype(query.dtype).name, batch=b, seqlen_q=t, seqlen_k=s,
                   heads_q=n, heads_kv=k, head_dim=h, packed=packed is not None,
                   total_q=t if packed is not None else 0,
                   total_k=s if packed is not None else 0,
                   seqlen_max_q=packed.max_q if packed is not None else t,
                   seqlen_max_k=packed.max_k if packed is not None else s,
                   has_alibi=alibi is not None,
                   dropout_p=dropout[0] if dropout else 0.0,
                   dropout_seed=dropout[1] if dropout else 0,
                   dropout_offset=dropout[2] if dropout else 0)


class _Packed:
    """Static facts of a packed call (n_seq, longest sequences)."""

    def __init__(self, n_seq, max_q, max_k):
        self.n_seq, self.max_q, self.max_k = n_seq, max_q, max_k


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def _check_offsets(name, offs, total, max_len):
    """Host checks of concrete offsets (traced ones are clamped on the device)."""
    if not _is_concrete(offs):
        return
    o = np.asarray(offs).astype(np.int64)
    if o[0] < 0 or np.any(np.diff(o) < 0) or o[-1] > total:
        _fail(f"{name} must be non-decreasing from >= 0 to <= {total} (the rows of the "
              f"buffer); got {o.tolist()[:16]}")
    longest = int(np.max(np.diff(o))) if len(o) > 1 else 0
    if longest > max_len:
        _fail(f"{name} has a sequence of {longest} rows, more than its max_seqlen ({max_len}): "
              "rows past it would not be computed")


def _static_int(name, x):
    if x is None or isinstance(x, jax.core.Tracer):
        _fail(f"{name} must be a Python int (it sizes the kernel's grid and its LSE)")
    try:
        v = int(x)
    except (TypeError, ValueError):
        _fail(f"{name} must be a Python int, got {x!r}")
    if v < 1:
        _fail(f"{name} must be >= 1, got {v}")
    return v


def _dropout(rate, seed, offset):
    """(rate, seed, offset) with rate > 0, or None; refuses traced seeds."""
    try:
        rate = float(rate or 0.0)
    except (TypeError, ValueError):
        _fail(f"dropout_rate must be a Python float, got {rate!r}")
    if not (0.0 <= rate < 1.0):
        _fail(f"dropout_rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return None
    for name, x in (("dropout_seed", seed), ("dropout_offset", offset)):
        if isinstance(x, jax.core.Tracer) or not isinstance(x, (int, np.integer)) or \
                isinstance(x, bool):
            _fail(f"{name} must be a Python int (got {type(x).__name__}): fagen takes the "
                  "seed and offset on the host, so they are compile-time constants of the "
                  "call; a traced seed would need a device-side seed path that libfagen does "
                  "not have.  A new value recompiles; vary the seed per step with a small "
                  "set of values, or fold the step into dropout_offset outside jit")
        if not 0 <= int(x) < 2 ** 64:
            _fail(f"{name} must be in [0, 2^64), got {x}")
    return rate, int(seed), int(offset)


def _rows_valid(offs, total, max_len):
    """bool [total]: row r lies in some sequence b of offs and within its first
    max_len rows (the rows the kernels write)."""
    r = jnp.arange(total, dtype=jnp.int32)
    n = offs.shape[0] - 1
    seg = jnp.searchsorted(offs[1:], r, side="right")
    start = offs[jnp.minimum(seg, n - 1)]
    return (r >= offs[0]) & (seg < n) & (r - start < max_len)


def _mask_rows(x, valid):
    """x [1, total, heads, dim] with rows outside every sequence set to 0."""
    return jnp.where(valid[None, :, None, None], x, jnp.zeros((), x.dtype))


def _split_extras(cfg, extras):
    """(lengths..., offsets (q, k) or (), slopes or ()) from the flat tuple."""
    n_lens = int(cfg.has_q_lens) + int(cfg.has_kv_lens)
    lens = extras[:n_lens]
    offs = extras[n_lens:n_lens + 2] if cfg.packed else ()
    return lens, offs


def _targets(cfg):
    return ((_lib.FWD_PACKED_TARGET, _lib.BWD_PACKED_TARGET) if cfg.packed
            else (_lib.FWD_TARGET, _lib.BWD_TARGET))


def _fwd_call(cfg, q, k, v, extras):
    lead = q.shape[:-3]
    lse_shape = ((cfg.batch, cfg.heads_q, cfg.seqlen_max_q) if cfg.packed
                 else lead + (cfg.heads_q, cfg.seqlen_q))
    out_types = (jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct(lse_shape, jnp.float32))
    # Dense: under vmap the handler gets one more leading dim on every operand
    # and folds it into the batch (broadcast_all, no loop).  Packed: a loop
    # (the offsets of each vmapped call index their own buffer).
    o, lse = _ffi.call(_targets(cfg)[0], out_types, (q, k, v) + tuple(extras), cfg.attrs(),
                       partitionable=not cfg.packed,
                       vmap_method="sequential" if cfg.packed else "broadcast_all")
    if cfg.packed:
        _, (oq, _ok) = _split_extras(cfg, extras)
        o = _mask_rows(o, _rows_valid(oq, cfg.total_q, cfg.seqlen_max_q))
    return o, lse


def _bwd_call(cfg, q, k, v, o, lse, dout, extras):
    per_batch = _lib.bwd_workspace_per_batch(
        _DTYPE_CODE[cfg.dtype], cfg.seqlen_max_q, cfg.seqlen_max_k, cfg.heads_q, cfg.heads_kv,
        cfg.head_dim, cfg.causal, cfg.deterministic)
    lead = (cfg.batch,) if cfg.packed else q.shape[:-3]
    out_types = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype),
                 # the scratch: an output XLA allocates, [lead..., bytes per sequence]
                 jax.ShapeDtypeStruct(lead + (max(per_batch, 16),), jnp.uint8))
    dq, dk, dv, _ = _ffi.call(_targets(cfg)[1], out_types,
                              (q, k, v, o, lse, dout) + tuple(extras), cfg.attrs(),
                              partitionable=not cfg.packed,
                              vmap_method="sequential" if cfg.packed else "broadcast_all")
    if cfg.packed:  # rows outside every sequence are never written
        _, (oq, ok) = _split_extras(cfg, extras)
        vq = _rows_valid(oq, cfg.total_q, cfg.seqlen_max_q)
        vk = _rows_valid(ok, cfg.total_k, cfg.seqlen_max_k)
        dq, dk, dv = _mask_rows(dq, vq), _mask_rows(dk, vk), _mask_rows(dv, vk)
    return dq, dk, dv


# extras: the optional int32 / float32 operands after q, k, v (lengths,
# offsets, slopes), in the handlers' order.  They get no gradient.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(cfg, q, k, v, extras):
    return _fwd_call(cfg, q, k, v, extras)


def _attention_fwd(cfg, q, k, v, extras):
    o, lse = _fwd_call(cfg, q, k, v, extras)
    return (o, lse), (q, k, v, o, lse, extras)


def _attention_bwd(cfg, res, cts):
    q, k, v, o, lse, extras = res
    dout, _ = cts  # the LSE output is returned under stop_gradient: its cotangent is 0
    # the same cfg, hence the same dropout seed and offset: the mask is regenerated
    dq, dk, dv = _bwd_call(cfg, q, k, v, o, lse, dout.astype(q.dtype), extras)
    return dq, dk, dv, tuple(None for _ in extras)


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
                          return_residual=False, return_lse=False, deterministic=False,
                          query_segment_offsets=None, key_segment_offsets=None,
                          max_seqlen_q=None, max_seqlen_k=None, alibi_slopes=None,
                          dropout_rate=0.0, dropout_seed=None, dropout_offset=0):
    """Scaled dot-product attention with fagen's kernels (CUDA, bf16/fp16).

    Arguments as jax.nn.dot_product_attention; bias and mask arrays are not
    supported (ValueError).  Beyond it:
      softcap         scores become softcap * tanh(s / softcap) (Gemma 2)
      return_lse      also return the natural-log log-sum-exp of each query
                      row's scaled scores, float32 [B, T, N] (return_residual
                      is the same, under jax.nn's name); it carries no
                      gradient (stop_gradient)
      deterministic   bitwise reproducible gradients (slower backward)
      query_segment_offsets, key_segment_offsets, max_seqlen_q, max_seqlen_k
                      packed sequences: query [total_q, N, H] (or [1,
                      total_q, N, H]), key/value [total_k, K, H]; sequence b
                      is rows offsets[b]:offsets[b+1] (int32 [n_seq + 1]
                      arrays, may be traced); max_seqlen_* are Python ints
                      bounding every sequence (static: they size the grid).
                      key offsets / max default to the query's.  Output
                      rows outside every sequence are 0; return_lse gives
                      [total_q, N].  Causal and windows align bottom-right
                      within each sequence (FlashAttention's varlen rule).
      alibi_slopes    float32 [N] or [B, N] ([n_seq, N] packed): adds
                      slope * (j - i) to the scores (bottom-right aligned);
                      no gradient flows to the slopes
      dropout_rate, dropout_seed, dropout_offset
                      dropout on the attention probabilities; seed and offset
                      are Python ints (compile-time constants: a new value
                      recompiles), the backward regenerates the same mask
    Masks follow jax.nn: is_causal and local_window_size=(left, right) let
    query i see key j iff i - left <= j <= i + right (and j <= i), which
    needs T == S; query_seq_lengths / key_value_seq_lengths mark padding.
    Differences from jax.nn, by design: query rows past their length, and
    rows that see no key, give 0 (jax.nn's xla path gives the mean of V).
    """
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    packed = None
    if query_segment_offsets is not None or key_segment_offsets is not None:
        if query_segment_offsets is None:
            _fail("key_segment_offsets needs query_segment_offsets")
        max_q = _static_int("max_seqlen_q", max_seqlen_q)
        if key_segment_offsets is None:
            key_segment_offsets = query_segment_offsets
            max_k = max_q if max_seqlen_k is None else _static_int("max_seqlen_k", max_seqlen_k)
        else:
            max_k = _static_int("max_seqlen_k", max_seqlen_k)
        offs = []
        for name, o in (("query_segment_offsets", query_segment_offsets),
                        ("key_segment_offsets", key_segment_offsets)):
            o = jnp.asarray(o)
            if o.ndim != 1 or o.shape[0] < 2 or not jnp.issubdtype(o.dtype, jnp.integer):
                _fail(f"{name} must be an integer array [n_seq + 1] with n_seq >= 1, got "
                      f"{o.dtype} {o.shape}")
            offs.append(o)
        if offs[0].shape != offs[1].shape:
            _fail(f"query_segment_offsets {offs[0].shape} and key_segment_offsets "
                  f"{offs[1].shape} must give the same number of sequences")
        if bias is None and mask is None and implementation in (None, "fagen"):
            if not (query.ndim == key.ndim == value.ndim and query.ndim in (3, 4)) or (
                    query.ndim == 4 and (query.shape[0] != 1 or key.shape[0] != 1)):
                _fail(f"packed sequences take query [total_q, N, H] (or [1, total_q, N, H]) "
                      f"and key/value [total_k, K, H]; got {query.shape}, {key.shape}")
        packed = _Packed(offs[0].shape[0] - 1, max_q, max_k)
    elif max_seqlen_q is not None or max_seqlen_k is not None:
        _fail("max_seqlen_q / max_seqlen_k go with query_segment_offsets (packed sequences)")
    squeeze = query.ndim == 3
    if squeeze:
        if key.ndim != 3 or value.ndim != 3:
            _fail(f"query is [T, N, H] but key {key.shape} and value {value.shape} are not "
                  "[S, K, H]")
        query, key, value = query[None], key[None], value[None]
    q_lens = None if query_seq_lengths is None else jnp.asarray(query_seq_lengths)
    kv_lens = None if key_value_seq_lengths is None else jnp.asarray(key_value_seq_lengths)
    alibi = None if alibi_slopes is None else jnp.asarray(alibi_slopes)
    window = _window(local_window_size)
    dropout = _dropout(dropout_rate, dropout_seed, dropout_offset)
    cfg = _check(query, key, value, bias, mask, scale, is_causal, q_lens, kv_lens, window,
                 softcap, implementation, deterministic, packed, alibi, dropout)
    if packed is not None:
        _check_offsets("query_segment_offsets", offs[0], cfg.total_q, packed.max_q)
        _check_offsets("key_segment_offsets", offs[1], cfg.total_k, packed.max_k)
    _register()
    extras = [x.astype(jnp.int32) for x in (q_lens, kv_lens) if x is not None]
    if packed is not None:
        extras += [o.astype(jnp.int32) for o in offs]
    if alibi is not None:
        # dense: one row of slopes per batch entry, so every operand has the
        # batch dims in front (vmap folding and batch partitioning rely on it)
        alibi = alibi.astype(jnp.float32)
        extras.append(alibi if packed is not None else
                      jnp.broadcast_to(alibi, (cfg.batch, cfg.heads_q)))
    out, lse = _attention(cfg, query, key, value, tuple(extras))
    if packed is not None and (return_lse or return_residual):
        # [n_seq, N, max_q] indexed by the row within its sequence -> [1, total_q, N]
        r = jnp.arange(cfg.total_q, dtype=jnp.int32)
        oq = extras[int(cfg.has_q_lens) + int(cfg.has_kv_lens)]
        seg = jnp.clip(jnp.searchsorted(oq[1:], r, side="right"), 0, packed.n_seq - 1)
        pos = jnp.clip(r - oq[seg], 0, packed.max_q - 1)
        rows = jnp.where(_rows_valid(oq, cfg.total_q, packed.max_q)[:, None],
                         lse[seg, :, pos], -jnp.inf)
        lse = jnp.swapaxes(rows[None], -1, -2)  # swapped back below
    if squeeze:
        out, lse = out[0], lse[0]
    if not (return_lse or return_residual):
        return out
    # fagen writes [..., N, T]; jax.nn's residual is [..., T, N]
    return out, jax.lax.stop_gradient(jnp.swapaxes(lse, -1, -2))
