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
features = pytest.mark.skipif(not (_lib.available() and _lib.has_features()),
                              reason="libfagen_jax built without mask features")

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


@pytest.mark.skipif(not _lib.available() or _lib.has_features(),
                    reason="only for a libfagen_jax without mask features")
def test_features_need_feature_support():
    q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="needs libfagen with feature support"):
        fagen_jax.dot_product_attention(q, q, q, softcap=30.0)


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
