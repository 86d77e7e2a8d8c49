"""Tests of fagen_jax.  Without a GPU (or without libfagen_jax) the GPU tests
are skipped with a reason; the import, shape, lowering and error-message
tests run anywhere jax runs.

  PYTHONPATH=python FAGEN_JAX_LIB=build/libfagen_jax.so python3 -m pytest -rs python/tests
"""
import os
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import fagen_jax  # noqa: E402
from fagen_jax import _lib  # noqa: E402

ON_GPU = jax.default_backend() == "gpu"
gpu = pytest.mark.skipif(not (ON_GPU and _lib.available()),
                         reason="needs a CUDA GPU backend and libfagen_jax")
features = pytest.mark.skipif(not _lib.available(), reason="needs libfagen_jax")

# ||x - ref|| / ||ref|| allowed against a float32 reference.
TOL = {"bfloat16": 1.5e-2, "float16": 4e-3}


def sds(shape, dtype=jnp.bfloat16):
    return jax.ShapeDtypeStruct(shape, dtype)


# --------------------------------------------------------------------------
# Anywhere: shapes, lowering, errors
# --------------------------------------------------------------------------

def test_import_and_library_search():
    assert callable(fagen_jax.dot_product_attention)
    assert fagen_jax.candidates()  # the paths it would try, in order


def test_output_and_lse_shapes():
    q, k = sds((2, 128, 8, 64)), sds((2, 256, 2, 64))
    o, lse = jax.eval_shape(
        lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, return_lse=True), q, k, k)
    assert o.shape == (2, 128, 8, 64) and o.dtype == jnp.bfloat16
    assert lse.shape == (2, 128, 8) and lse.dtype == jnp.float32  # jax.nn's residual: BTN


def test_unbatched_and_vmapped_shapes():
    o = jax.eval_shape(fagen_jax.dot_product_attention, sds((64, 4, 32), jnp.float16),
                       sds((64, 4, 32), jnp.float16), sds((64, 4, 32), jnp.float16))
    assert o.shape == (64, 4, 32) and o.dtype == jnp.float16
    q = sds((3, 2, 64, 4, 32))
    o = jax.eval_shape(jax.vmap(fagen_jax.dot_product_attention), q, q, q)
    assert o.shape == (3, 2, 64, 4, 32)


@pytest.mark.skipif(not _lib.available(), reason="libfagen_jax not built")
def test_gradient_shapes():
    q, k = sds((2, 128, 8, 64)), sds((2, 128, 2, 64))
    loss = lambda q, k, v: fagen_jax.dot_product_attention(  # noqa: E731
        q, k, v, is_causal=True).astype(jnp.float32).sum()
    g = jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2)), q, k, k)
    assert [x.shape for x in g] == [q.shape, k.shape, k.shape]


@pytest.mark.skipif(not _lib.available(), reason="libfagen_jax not built")
def test_lowering_names_both_targets_and_attributes():
    q = sds((2, 128, 4, 64))
    loss = lambda q, k, v: fagen_jax.dot_product_attention(  # noqa: E731
        q, k, v, is_causal=True, scale=0.5).astype(jnp.float32).sum()
    text = jax.jit(jax.grad(loss)).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
    assert "@fagen_attention_fwd" in text and "@fagen_attention_bwd" in text
    assert "causal = 1 : i32" in text and "scale = 5.000000e-01 : f32" in text


@pytest.mark.parametrize("kwargs,message", [
    (dict(bias=jnp.zeros((1, 1, 8, 8))), "bias arrays are not supported"),
    (dict(mask=jnp.ones((1, 1, 8, 8), bool)), "mask arrays are not supported"),
    (dict(implementation="cudnn"), "implementation='cudnn'"),
    (dict(scale=-1.0), "scale must be a positive"),
    (dict(softcap=0.0), "softcap must be a positive"),
    (dict(local_window_size=(-2, 3)), "negative extent"),
    (dict(is_causal=True, key_value_seq_lengths=jnp.array([8])), "give both"),
    (dict(query_seq_lengths=jnp.array([8, 8])), "query_seq_lengths must be an integer array"),
])
def test_unsupported_arguments_raise(kwargs, message):
    q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match=message):
        fagen_jax.dot_product_attention(q, q, q, **kwargs)


@pytest.mark.parametrize("q_shape,k_shape,dtype,message", [
    ((1, 8, 2, 64), (1, 8, 2, 64), jnp.float32, "fagen takes bfloat16 or float16"),
    ((1, 8, 2, 260), (1, 8, 2, 260), jnp.bfloat16, "head dim 260 is not supported"),
    ((1, 8, 2, 36), (1, 8, 2, 36), jnp.bfloat16, "head dim 36 is not supported"),
    ((1, 8, 6, 64), (1, 8, 4, 64), jnp.bfloat16, "must be a multiple of key/value heads"),
    ((1, 8, 2, 64), (2, 8, 2, 64), jnp.bfloat16, "differ in batch or head dim"),
    ((1, 1, 8, 2, 64), (1, 1, 8, 2, 64), jnp.bfloat16, r"\[B, T, N, H\]"),
])
def test_bad_shapes_and_dtypes_raise(q_shape, k_shape, dtype, message):
    q, k = jnp.zeros(q_shape, dtype), jnp.zeros(k_shape, dtype)
    with pytest.raises(ValueError, match=message):
        fagen_jax.dot_product_attention(q, k, k)


def test_causal_needs_equal_lengths():
    q, k = jnp.zeros((1, 8, 2, 64), jnp.bfloat16), jnp.zeros((1, 16, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="top-left"):
        fagen_jax.dot_product_attention(q, k, k, is_causal=True)


# --------------------------------------------------------------------------
# GPU: values against jax.nn (implementation="xla") in float32
# --------------------------------------------------------------------------

def rel(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.isfinite(x)), "non-finite values"
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def inputs(shape_q, shape_k, dtype, seed):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], shape_q, jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], shape_k, jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], shape_k, jnp.float32).astype(dtype)
    do = jax.random.normal(ks[3], shape_q, jnp.float32).astype(dtype)
    return q, k, v, do


def reference(q, k, v, **kw):
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    return jax.nn.dot_product_attention(f32(q), f32(k), f32(v), implementation="xla", **kw)


# (B, T, S, N, K, H, causal)
SHAPES = [
    (2, 128, 128, 4, 4, 64, False),
    (2, 256, 256, 8, 2, 128, True),
    (1, 1000, 1000, 8, 1, 64, True),
    (3, 77, 77, 6, 3, 40, False),
    (2, 192, 320, 4, 2, 128, False),
    (1, 512, 512, 2, 2, 256, True),
    (4, 64, 64, 4, 4, 32, True),
]


@gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_T{}_S{}_N{}_K{}_H{}_{}".format(
    *s[:6], "causal" if s[6] else "full"))
def test_forward_and_gradients_match_xla(shape, dtype):
    b, t, s, n, kh, h, causal = shape
    q, k, v, do = inputs((b, t, n, h), (b, s, kh, h), jnp.dtype(dtype), seed=sum(shape))

    def run(fn):
        def loss(q, k, v):
            o = fn(q, k, v)
            return jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32)), o
        (_, o), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
        return o, g

    o, g = run(lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, is_causal=causal))
    o_ref, g_ref = run(lambda q, k, v: reference(q, k, v, is_causal=causal))
    tol = TOL[dtype]
    assert o.dtype == q.dtype and o.shape == q.shape
    assert rel(o, o_ref) < tol
    for name, x, r in zip(("dq", "dk", "dv"), g, g_ref):
        assert x.shape == r.shape and x.dtype == q.dtype
        assert rel(x, r) < tol, name


@gpu
def test_lse_matches_logsumexp():
    q, k, v, _ = inputs((2, 256, 4, 64), (2, 256, 4, 64), jnp.bfloat16, seed=3)
    _, lse = fagen_jax.dot_product_attention(q, k, v, is_causal=True, return_lse=True)
    s = jnp.einsum("btnh,bsnh->bnts", q.astype(jnp.float32), k.astype(jnp.float32)) / 8.0
    s = jnp.where(jnp.tril(jnp.ones((256, 256), bool)), s, -jnp.inf)
    ref = jnp.swapaxes(jax.nn.logsumexp(s, axis=-1), 1, 2)  # [B, T, N]
    assert lse.shape == (2, 256, 4)
    assert float(jnp.max(jnp.abs(lse - ref))) < 2e-2


@gpu
def test_vmap_equals_loop_and_eager_equals_jit():
    q, k, v, _ = inputs((3, 2, 128, 4, 64), (3, 2, 128, 2, 64), jnp.bfloat16, seed=5)
    f = lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    batched = jax.jit(jax.vmap(f))(q, k, v)
    looped = jnp.stack([f(q[i], k[i], v[i]) for i in range(3)])
    np.testing.assert_array_equal(np.asarray(batched), np.asarray(looped))
    # vmap over q only: k and v are broadcast by the FFI call's vmap rule
    one_kv = jax.jit(jax.vmap(f, in_axes=(0, None, None)))(q, k[0], v[0])
    np.testing.assert_array_equal(np.asarray(one_kv[1]), np.asarray(f(q[1], k[0], v[0])))
    # gradients under vmap
    g = jax.jit(jax.vmap(jax.grad(lambda q, k, v: f(q, k, v).astype(jnp.float32).sum())))(q, k, v)
    g1 = jax.grad(lambda q, k, v: f(q, k, v).astype(jnp.float32).sum())(q[2], k[2], v[2])
    assert rel(g[2], g1) < 1e-2  # dQ sums with atomics: last bits may differ


@gpu
def test_deterministic_gradients_repeat_bitwise():
    q, k, v, _ = inputs((2, 512, 4, 64), (2, 512, 4, 64), jnp.bfloat16, seed=9)
    loss = lambda q, k, v: fagen_jax.dot_product_attention(  # noqa: E731
        q, k, v, deterministic=True).astype(jnp.float32).sum()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    a, b = grad(q, k, v), grad(q, k, v)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@gpu
def test_shard_map_over_batch_and_heads():
    from jax.sharding import Mesh, PartitionSpec as P
    try:
        from jax import shard_map
    except ImportError:
        from jax.experimental.shard_map import shard_map
    devs = np.array(jax.devices())
    mesh = Mesh(devs.reshape(len(devs), 1), ("b", "h"))
    q, k, v, _ = inputs((2 * len(devs), 128, 4, 64), (2 * len(devs), 128, 4, 64),
                        jnp.bfloat16, seed=11)
    spec = P("b", None, "h", None)
    f = shard_map(lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, is_causal=True),
                  mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)
    out = jax.jit(f)(q, k, v)
    assert rel(out, reference(q, k, v, is_causal=True)) < TOL["bfloat16"]


@gpu
def test_handler_errors_come_back_as_exceptions():
    # Called directly with a wrong LSE shape, the handler refuses with its message.
    q = jnp.ones((1, 64, 2, 64), jnp.bfloat16)
    _lib.register()
    call = jax.ffi.ffi_call(_lib.FWD_TARGET, (sds(q.shape), sds((1, 64, 2), jnp.float32)))
    cfg = fagen_jax.attention._check(q, q, q, None, None, None, False, None, None, None, None,
                                     None)
    with pytest.raises(Exception, match="lse has dims"):
        jax.block_until_ready(call(q, q, q, **cfg.attrs()))


@gpu
def test_command_buffer_capture_gives_same_values():
    # A fresh process with XLA capturing custom calls into CUDA graphs.
    code = (
        "import jax, jax.numpy as jnp, numpy as np, fagen_jax\n"
        "k = jax.random.split(jax.random.PRNGKey(0), 3)\n"
        "q, kk, v = (jax.random.normal(x, (2, 256, 4, 64)).astype(jnp.bfloat16) for x in k)\n"
        "loss = lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, is_causal=True,"
        " deterministic=True).astype(jnp.float32).sum()\n"
        "f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))\n"
        "a = [np.asarray(x) for x in jax.tree.leaves(f(q, kk, v))]\n"
        "b = [np.asarray(x) for x in jax.tree.leaves(f(q, kk, v))]\n"
        "assert all(np.array_equal(x, y) for x, y in zip(a, b))\n"
        "print('ok', float(a[0]))\n")
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
               " --xla_gpu_enable_command_buffer=FUSION,CUSTOM_CALL"
               " --xla_gpu_graph_min_graph_size=1"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


# --------------------------------------------------------------------------
# GPU, masks (when libfagen has them)
# --------------------------------------------------------------------------

@gpu
@features
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_padding_lengths_match_xla_on_valid_rows(dtype):
    b, t, n, h = 3, 200, 4, 64
    q, k, v, do = inputs((b, t, n, h), (b, t, n, h), jnp.dtype(dtype), seed=21)
    lens = jnp.array([200, 131, 7], jnp.int32)
    valid = (jnp.arange(t)[None, :] < lens[:, None])[:, :, None, None]

    def run(fn):
        def loss(q, k, v):
            o = fn(q, k, v)
            return jnp.sum(jnp.where(valid, o.astype(jnp.float32) * do.astype(jnp.float32), 0))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)[1], fn(q, k, v)

    kw = dict(query_seq_lengths=lens, key_value_seq_lengths=lens, is_causal=True)
    g, o = run(lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, **kw))
    g_ref, o_ref = run(lambda q, k, v: reference(q, k, v, **kw))
    tol = TOL[dtype]
    assert rel(jnp.where(valid, o, 0), jnp.where(valid, o_ref, 0)) < tol
    assert float(jnp.max(jnp.abs(jnp.where(valid, 0, o.astype(jnp.float32))))) == 0.0
    for x, r in zip(g, g_ref):
        assert rel(x, r) < tol


@gpu
@features
@pytest.mark.parametrize("window", [(32, 0), (16, 16), 40])
def test_local_window_matches_xla(window):
    q, k, v, do = inputs((2, 300, 4, 64), (2, 300, 2, 64), jnp.bfloat16, seed=31)
    causal = window == (32, 0)

    def run(fn):
        loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) *  # noqa: E731
                                       do.astype(jnp.float32))
        return fn(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    kw = dict(local_window_size=window, is_causal=causal)
    o, g = run(lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, **kw))
    o_ref, g_ref = run(lambda q, k, v: reference(q, k, v, **kw))
    assert rel(o, o_ref) < TOL["bfloat16"]
    for x, r in zip(g, g_ref):
        assert rel(x, r) < TOL["bfloat16"]


@gpu
@features
def test_softcap_matches_float32_formula():
    q, k, v, do = inputs((2, 256, 4, 128), (2, 256, 4, 128), jnp.bfloat16, seed=41)
    cap, scale = 5.0, 1.0 / np.sqrt(128)

    def ref(q, k, v):
        f = lambda x: x.astype(jnp.float32)  # noqa: E731
        s = jnp.einsum("btnh,bsnh->bnts", f(q), f(k)) * scale
        s = cap * jnp.tanh(s / cap)
        s = jnp.where(jnp.tril(jnp.ones((256, 256), bool)), s, -jnp.inf)
        return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(s, axis=-1), f(v))

    def run(fn):
        loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) *  # noqa: E731
                                       do.astype(jnp.float32))
        return fn(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    o, g = run(lambda q, k, v: fagen_jax.dot_product_attention(q, k, v, is_causal=True,
                                                               softcap=cap))
    o_ref, g_ref = run(ref)
    assert rel(o, o_ref) < TOL["bfloat16"]
    for x, r in zip(g, g_ref):
        assert rel(x, r) < TOL["bfloat16"]


# --------------------------------------------------------------------------
# Flax
# --------------------------------------------------------------------------

@gpu
def test_flax_linen_attention_fn_matches_xla():
    nn = pytest.importorskip("flax.linen")
    from fagen_jax.nn import make_attention_fn
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 128, 256), jnp.float32).astype(jnp.bfloat16)
    kw = dict(num_heads=4, qkv_features=256, dtype=jnp.bfloat16)
    ours = nn.MultiHeadDotProductAttention(attention_fn=make_attention_fn(is_causal=True), **kw)
    params = ours.init(jax.random.PRNGKey(1), x)
    ref = nn.MultiHeadDotProductAttention(**kw)
    out = ours.apply(params, x)
    out_ref = ref.apply(params, x, mask=nn.make_causal_mask(jnp.ones((2, 128))))
    assert rel(out, out_ref) < 2e-2


@gpu
def test_flax_self_attention_modules_train():
    nnx = pytest.importorskip("flax.nnx")
    import fagen_jax.nn as fnn
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 128), jnp.float32).astype(jnp.bfloat16)
    lin = fnn.LinenSelfAttention(num_heads=4, head_dim=32, num_kv_heads=2)
    p = lin.init(jax.random.PRNGKey(1), x)
    g = jax.grad(lambda p: lin.apply(p, x).astype(jnp.float32).sum())(p)
    assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree.leaves(g))
    m = fnn.NnxSelfAttention(128, 4, 32, num_kv_heads=2, rngs=nnx.Rngs(0))
    gm = nnx.grad(lambda m: m(x).astype(jnp.float32).sum())(m)
    assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree.leaves(nnx.state(gm)))


# --------------------------------------------------------------------------
# Packed sequences, ALiBi, dropout, batch partitioning: anywhere
# --------------------------------------------------------------------------

def philox4x32_10(ctr, key):
    """Philox4x32-10 on uint32 numpy arrays (ctr: 4 arrays, key: 2), as fagen.h."""
    m = np.uint64(0xFFFFFFFF)
    c = [np.asarray(x, np.uint64) for x in ctr]
    k0, k1 = (np.asarray(x, np.uint64) for x in key)
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m, (k1 + np.uint64(0xBB67AE85)) & m
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & m, (p0 >> np.uint64(32)) ^ c[3] ^ k1,
             p0 & m]
    return [x.astype(np.uint32) for x in c]


def dropout_factor(p, seed, offset, batch, heads, len_q, len_k):
    """float64 [batch, heads, len_q, len_k]: 0 where fagen drops P, else
    65536 / (65536 - p16) (fagen.h's exact rule)."""
    p16 = min(int(np.floor(float(np.float32(p)) * 65536.0 + 0.5)), 65535)
    bh, i, j = np.meshgrid(np.arange(batch * heads), np.arange(len_q), np.arange(len_k),
                           indexing="ij")
    j = j.astype(np.uint64)
    ctr = [np.uint64(4) * (j >> np.uint64(5)) + ((j >> np.uint64(1)) & np.uint64(3)),
           i.astype(np.uint64), bh.astype(np.uint64),
           np.full(j.shape, offset & 0xFFFFFFFF, np.uint64)]
    key = [np.full(j.shape, seed & 0xFFFFFFFF, np.uint64),
           np.full(j.shape, (seed >> 32) ^ (offset >> 32), np.uint64)]
    words = np.stack(philox4x32_10(ctr, key)).astype(np.uint64)  # [4, ...]
    w = np.take_along_axis(words, ((j >> np.uint64(3)) & np.uint64(3)).astype(np.int64)[None],
                           axis=0)[0]
    r = np.where(j & np.uint64(1), w >> np.uint64(16), w & np.uint64(0xFFFF))
    keep = r >= p16
    return (keep * (65536.0 / (65536 - p16))).reshape(batch, heads, len_q, len_k)


def test_numpy_philox_matches_random123_known_answers():
    kat = [([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
           ([0xffffffff] * 4, [0xffffffff] * 2, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
           ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1])]
    for ctr, key, want in kat:
        got = philox4x32_10([np.uint64(x) for x in ctr], [np.uint64(x) for x in key])
        assert [int(x) for x in got] == want
    # keys j = 8n + e of row 0 take half e of word n of the first answer (fagen.h)
    f = dropout_factor(0.5, 0, 0, 1, 1, 1, 32)[0, 0, 0]
    words = [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    for n in range(4):
        for e in range(2):
            r = (words[n] >> 16) if e else (words[n] & 0xFFFF)
            assert f[8 * n + e] == (2.0 if r >= 32768 else 0.0)


def _packed_args(total_q=300, total_k=300):
    q = sds((total_q, 4, 64))
    k = sds((total_k, 2, 64))
    return q, k, k


def test_packed_shapes_and_lse_layout():
    q, k, v = _packed_args()
    offs = jnp.array([0, 100, 250, 290], jnp.int32)
    f = lambda q, k, v, o: fagen_jax.dot_product_attention(  # noqa: E731
        q, k, v, query_segment_offsets=o, max_seqlen_q=150, is_causal=True, return_lse=True)
    o, lse = jax.eval_shape(f, q, k, v, offs)
    assert o.shape == (300, 4, 64) and lse.shape == (300, 4) and lse.dtype == jnp.float32
    o4 = jax.eval_shape(lambda q, k, v, o: fagen_jax.dot_product_attention(
        q, k, v, query_segment_offsets=o, max_seqlen_q=150), sds((1, 300, 4, 64)),
        sds((1, 300, 2, 64)), sds((1, 300, 2, 64)), offs)
    assert o4.shape == (1, 300, 4, 64)
    vq = sds((3, 300, 4, 64))
    vk = sds((3, 300, 2, 64))
    ov = jax.eval_shape(jax.vmap(lambda *a: f(*a)[0]), vq, vk, vk, sds((3, 4), jnp.int32))
    assert ov.shape == (3, 300, 4, 64)


@pytest.mark.skipif(not _lib.available(), reason="libfagen_jax not built")
def test_lowering_of_features_and_partitioning_attributes():
    q = sds((2, 128, 4, 64))
    loss = lambda q, k, v: fagen_jax.dot_product_attention(  # noqa: E731
        q, k, v, is_causal=True, alibi_slopes=jnp.ones(4), dropout_rate=0.25,
        dropout_seed=2 ** 63 + 5, dropout_offset=7).astype(jnp.float32).sum()
    text = jax.jit(jax.grad(loss)).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
    calls = [l for l in text.splitlines() if "stablehlo.custom_call @fagen_attention_" in l]
    assert len(calls) == 2
    for c in calls:
        assert "has_alibi = 1 : i32" in c and "dropout_p = 2.500000e-01 : f32" in c
        assert "dropout_seed = -9223372036854775803 : i64" in c  # 2^63 + 5 as int64 bits
        assert "dropout_offset = 7 : i64" in c
        assert "tensor<2x4xf32>" in c  # the slopes, one row per batch entry
        if fagen_jax.attention._ffi.partitioned():
            assert 'num_batch_dims = "1"' in c
            if jax.config.jax_use_shardy_partitioner:
                assert "sdy.sharding_rule" in c and "need_replication" in c
    offs = jnp.array([0, 100, 250, 290], jnp.int32)
    f = lambda q, k, v, o: fagen_jax.dot_product_attention(  # noqa: E731
        q, k, v, query_segment_offsets=o, max_seqlen_q=150).astype(jnp.float32).sum()
    text = jax.jit(jax.grad(f)).trace(*_packed_args(), offs).lower(
        lowering_platforms=("cuda",)).as_text()
    calls = [l for l in text.splitlines() if "stablehlo.custom_call @fagen_attention_" in l]
    assert [("fwd_packed" in c, "bwd_packed" in c) for c in calls] == [(True, False),
                                                                       (False, True)]
    for c in calls:
        assert "batch = 3 : i32" in c and "seqlen_q = 150 : i32" in c
        assert "total_q = 300 : i32" in c and "packed = 1 : i32" in c
        assert "num_batch_dims" not in c


@pytest.mark.parametrize("kwargs,message", [
    (dict(query_segment_offsets=jnp.array([0, 5])), "max_seqlen_q must be a Python int"),
    (dict(query_segment_offsets=jnp.array([0, 5]), max_seqlen_q=0), "must be >= 1"),
    (dict(query_segment_offsets=jnp.array([0, 5, 3]), max_seqlen_q=8), "non-decreasing"),
    (dict(query_segment_offsets=jnp.array([0, 5, 9]), max_seqlen_q=8), "non-decreasing"),
    (dict(query_segment_offsets=jnp.array([0, 6, 8]), max_seqlen_q=4), "more than its max"),
    (dict(query_segment_offsets=jnp.array([[0, 8]]), max_seqlen_q=8), r"\[n_seq \+ 1\]"),
    (dict(key_segment_offsets=jnp.array([0, 8])), "needs query_segment_offsets"),
    (dict(query_segment_offsets=jnp.array([0, 8]), key_segment_offsets=jnp.array([0, 4, 8]),
          max_seqlen_q=8, max_seqlen_k=8), "same number of sequences"),
    (dict(max_seqlen_q=8), "go with query_segment_offsets"),
    (dict(query_segment_offsets=jnp.array([0, 4, 8]), max_seqlen_q=8,
          query_seq_lengths=jnp.array([1, 2, 3])), r"shape \(2,\)"),
])
def test_packed_arguments_raise(kwargs, message):
    q = jnp.zeros((8, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match=message):
        fagen_jax.dot_product_attention(q, q, q, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(alibi_slopes=jnp.ones(3)), r"alibi_slopes must be a float array of shape \(2,\)"),
    (dict(alibi_slopes=jnp.ones((2, 2))), r"or \(1, 2\)"),
    (dict(alibi_slopes=jnp.ones(2, jnp.int32)), "alibi_slopes must be a float"),
    (dict(dropout_rate=1.0, dropout_seed=1), r"dropout_rate must be in \[0, 1\)"),
    (dict(dropout_rate=-0.1, dropout_seed=1), r"dropout_rate must be in \[0, 1\)"),
    (dict(dropout_rate=0.1), "dropout_seed must be a Python int"),
    (dict(dropout_rate=0.1, dropout_seed=jnp.uint32(3)), "dropout_seed must be a Python int"),
    (dict(dropout_rate=0.1, dropout_seed=2 ** 64), r"\[0, 2\^64\)"),
    (dict(dropout_rate=0.1, dropout_seed=1, dropout_offset=-1), r"\[0, 2\^64\)"),
])
def test_alibi_and_dropout_arguments_raise(kwargs, message):
    q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match=message):
        fagen_jax.dot_product_attention(q, q, q, **kwargs)


def test_traced_dropout_seed_raises_under_jit():
    q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    f = jax.jit(lambda q, s: fagen_jax.dot_product_attention(q, q, q, dropout_rate=0.1,
                                                             dropout_seed=s))
    with pytest.raises(ValueError, match="device-side seed path"):
        f(q, 3)


def test_alibi_with_unequal_lengths_raises():
    q, k = jnp.zeros((1, 8, 2, 64), jnp.bfloat16), jnp.zeros((1, 16, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="bottom-right"):
        fagen_jax.dot_product_attention(q, k, k, alibi_slopes=jnp.ones(2))


# --------------------------------------------------------------------------
# GPU: packed sequences, ALiBi, dropout, sharded jit
# --------------------------------------------------------------------------

def loss_and_grads(fn, q, k, v, do):
    def loss(q, k, v):
        o = fn(q, k, v)
        return jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32)), o
    (_, o), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return o, g


def scores_reference(q, k, v, scale, causal, bias=None, factor=None):
    """float32 attention [B, T, N, H] with GQA, optional additive bias [B|1, N, T, S] and
    a dropout factor [B, N, T, S] on the probabilities."""
    f = lambda x: x.astype(jnp.float32)  # noqa: E731
    rep = q.shape[2] // k.shape[2]
    kk, vv = jnp.repeat(f(k), rep, axis=2), jnp.repeat(f(v), rep, axis=2)
    s = jnp.einsum("btnh,bsnh->bnts", f(q), kk) * scale
    if bias is not None:
        s = s + bias
    t, sk = q.shape[1], k.shape[1]
    if causal:
        s = jnp.where(jnp.tril(jnp.ones((t, sk), bool), sk - t), s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1)
    if factor is not None:
        p = p * factor
    return jnp.einsum("bnts,bsnh->btnh", p, vv)


@gpu
@features
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("causal", [False, True])
def test_packed_sequences_match_per_sequence_xla(dtype, causal):
    lens = [37, 128, 0, 200, 5, 64]  # an empty sequence; 23 rows of tail after the last
    offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    total = int(offs[-1]) + 23
    q, k, v, do = inputs((total, 8, 64), (total, 2, 64), jnp.dtype(dtype), seed=51)

    def ours(q, k, v):
        return fagen_jax.dot_product_attention(q, k, v, query_segment_offsets=jnp.asarray(offs),
                                               max_seqlen_q=max(lens), is_causal=causal)

    def ref(q, k, v):
        parts = []
        for b, n in enumerate(lens):
            sl = slice(int(offs[b]), int(offs[b + 1]))
            if n:
                parts.append(reference(q[sl][None], k[sl][None], v[sl][None],
                                       is_causal=causal)[0])
        parts.append(jnp.zeros((23,) + q.shape[1:], jnp.float32))
        return jnp.concatenate(parts)

    o, g = loss_and_grads(ours, q, k, v, do)
    o_ref, g_ref = loss_and_grads(ref, q, k, v, do)
    tol = TOL[dtype]
    assert o.shape == q.shape and o.dtype == q.dtype
    assert rel(o, o_ref) < tol
    assert float(jnp.max(jnp.abs(o[-23:].astype(jnp.float32)))) == 0.0  # rows of no sequence
    for name, x, r in zip(("dq", "dk", "dv"), g, g_ref):
        assert rel(x, r) < tol, name
        assert float(jnp.max(jnp.abs(x[-23:].astype(jnp.float32)))) == 0.0, name
    # the LSE, [total, N], against each sequence's logsumexp
    _, lse = fagen_jax.dot_product_attention(q, k, v, query_segment_offsets=jnp.asarray(offs),
                                             max_seqlen_q=max(lens), is_causal=causal,
                                             return_lse=True)
    b = 3
    sl = slice(int(offs[b]), int(offs[b + 1]))
    s = jnp.einsum("tnh,snh->nts", q[sl].astype(jnp.float32),
                   jnp.repeat(k[sl].astype(jnp.float32), 4, axis=1)) / 8.0
    if causal:
        s = jnp.where(jnp.tril(jnp.ones((200, 200), bool)), s, -jnp.inf)
    assert float(jnp.max(jnp.abs(lse[sl] - jax.nn.logsumexp(s, axis=-1).T))) < 2e-2
    assert bool(jnp.all(jnp.isneginf(lse[-23:])))


@gpu
@features
def test_packed_cross_attention_and_vmap():
    # different query and key offsets (no causal: jax.nn aligns it top-left)
    lq, lk = [50, 3, 120], [90, 40, 7]
    oq = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
    ok = np.concatenate([[0], np.cumsum(lk)]).astype(np.int32)
    q, k, v, do = inputs((2, int(oq[-1]), 4, 128), (2, int(ok[-1]), 4, 128), jnp.bfloat16,
                         seed=61)

    def ours(q, k, v):
        return fagen_jax.dot_product_attention(
            q, k, v, query_segment_offsets=jnp.asarray(oq), key_segment_offsets=jnp.asarray(ok),
            max_seqlen_q=max(lq), max_seqlen_k=max(lk))

    def ref(q, k, v):
        return jnp.concatenate([reference(q[oq[b]:oq[b + 1]][None], k[ok[b]:ok[b + 1]][None],
                                          v[ok[b]:ok[b + 1]][None])[0] for b in range(3)])

    o, g = loss_and_grads(jax.vmap(ours), q, k, v, do)  # vmap: a loop over packed calls
    o_ref, g_ref = loss_and_grads(jax.vmap(ref), q, k, v, do)
    assert rel(o, o_ref) < TOL["bfloat16"]
    for x, r in zip(g, g_ref):
        assert rel(x, r) < TOL["bfloat16"]


@gpu
@features
@pytest.mark.parametrize("causal,per_batch", [(True, False), (False, True), (True, True)])
def test_alibi_matches_bias_reference(causal, per_batch):
    b, t, n, kh, h = 2, 200, 4, 2, 64
    q, k, v, do = inputs((b, t, n, h), (b, t, kh, h), jnp.bfloat16, seed=71)
    base = 2.0 ** (-8.0 * (np.arange(n) + 1) / n)  # the ALiBi paper's slopes
    slopes = np.stack([base, base * 0.5]) if per_batch else base
    slopes = jnp.asarray(slopes, jnp.float32)
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    sl = slopes if per_batch else jnp.broadcast_to(slopes, (b, n))
    bias = sl[:, :, None, None] * jnp.asarray(j - i, jnp.float32)[None, None]

    o, g = loss_and_grads(lambda q, k, v: fagen_jax.dot_product_attention(
        q, k, v, is_causal=causal, alibi_slopes=slopes), q, k, v, do)
    o_ref, g_ref = loss_and_grads(lambda q, k, v: scores_reference(
        q, k, v, 1 / 8.0, causal, bias=bias), q, k, v, do)
    assert rel(o, o_ref) < TOL["bfloat16"]
    for x, r in zip(g, g_ref):
        assert rel(x, r) < TOL["bfloat16"]
    # and it is not a no-op: without the slopes the output differs
    assert rel(fagen_jax.dot_product_attention(q, k, v, is_causal=causal), o_ref) > 0.05


@gpu
@features
@pytest.mark.parametrize("rate,causal", [(0.1, True), (0.5, False)])
def test_dropout_matches_reconstructed_mask(rate, causal):
    b, t, n, kh, h = 2, 160, 4, 2, 64
    seed, offset = 0x0123456789ABCDEF, (5 << 32) | 9
    q, k, v, do = inputs((b, t, n, h), (b, t, kh, h), jnp.bfloat16, seed=81)
    factor = jnp.asarray(dropout_factor(rate, seed, offset, b, n, t, t), jnp.float32)
    kept = float(jnp.mean(factor > 0))
    assert abs(kept - (1 - rate)) < 0.02

    def ours(q, k, v, s=seed):
        return fagen_jax.dot_product_attention(q, k, v, is_causal=causal, dropout_rate=rate,
                                               dropout_seed=s, dropout_offset=offset)

    o, g = loss_and_grads(ours, q, k, v, do)
    o_ref, g_ref = loss_and_grads(lambda q, k, v: scores_reference(
        q, k, v, 1 / 8.0, causal, factor=factor), q, k, v, do)
    assert rel(o, o_ref) < TOL["bfloat16"]
    for name, x, r in zip(("dq", "dk", "dv"), g, g_ref):
        assert rel(x, r) < TOL["bfloat16"], name
    # reproducible bit for bit; another seed gives another mask
    o2, _ = loss_and_grads(ours, q, k, v, do)
    np.testing.assert_array_equal(np.asarray(o), np.asarray(o2))
    o3, _ = loss_and_grads(lambda q, k, v: ours(q, k, v, s=seed + 1), q, k, v, do)
    assert rel(o3, o_ref) > 0.05


@gpu
def test_sharded_jit_partitions_along_batch():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    devs = np.array(jax.devices())
    mesh = Mesh(devs, ("b",))
    nd = len(devs)
    q, k, v, do = inputs((2 * nd, 256, 4, 64), (2 * nd, 256, 2, 64), jnp.bfloat16, seed=91)
    spec = NamedSharding(mesh, P("b"))
    q, k, v, do = (jax.device_put(x, spec) for x in (q, k, v, do))
    lens = jax.device_put(jnp.array([256, 100] * nd, jnp.int32), spec)

    def f(q, k, v):
        return fagen_jax.dot_product_attention(q, k, v, is_causal=True)

    step = jax.jit(jax.value_and_grad(
        lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32) * do.astype(jnp.float32)),
        argnums=(0, 1, 2)))
    compiled = step.lower(q, k, v).compile()
    hlo = compiled.as_text()
    assert "fagen_attention_fwd" in hlo and "fagen_attention_bwd" in hlo
    if nd > 1:  # each device runs the call on its own rows: local batch 2
        assert "bf16[2,256,4,64]" in hlo and "all-gather" not in hlo
    _, g = step(q, k, v)
    _, g_ref = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(
        reference(q, k, v, is_causal=True) * do.astype(jnp.float32)), argnums=(0, 1, 2)))(q, k, v)
    for x, r in zip(g, g_ref):
        assert rel(x, r) < TOL["bfloat16"]
    assert g[0].sharding.is_equivalent_to(spec, 4)
    # with lengths (a batch-leading int32 operand) as well
    out = jax.jit(lambda q, k, v, l: fagen_jax.dot_product_attention(
        q, k, v, query_seq_lengths=l, key_value_seq_lengths=l, is_causal=True))(q, k, v, lens)
    assert out.sharding.is_equivalent_to(spec, 4)
