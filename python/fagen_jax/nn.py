"""Flax building blocks over fagen_jax.dot_product_attention.

Two ways in:
  * make_attention_fn(is_causal=True) gives an `attention_fn` for flax's own
    modules: linen.MultiHeadDotProductAttention(..., attention_fn=fn) and
    nnx.MultiHeadAttention(..., attention_fn=fn).  Give those modules no mask
    (the causal mask is fagen's flag) and their `dtype` bfloat16 or float16.
  * LinenSelfAttention / NnxSelfAttention: a fused-QKV self-attention layer
    ([B, T, features] -> [B, T, features]) with GQA, for models that swap
    their attention block for this one.
flax is imported only when these are used.
"""
from .attention import dot_product_attention

__all__ = ["make_attention_fn", "LinenSelfAttention", "NnxSelfAttention"]


def make_attention_fn(is_causal=False, **fagen_kwargs):
    """An attention_fn(query, key, value, bias=None, mask=None, **flax_kwargs)
    with flax's calling convention, computing with fagen.  Dropout is not
    supported: a dropout_rate > 0 outside deterministic mode raises."""
    def attention_fn(query, key, value, bias=None, mask=None, dropout_rng=None,
                     dropout_rate=0.0, deterministic=True, dtype=None, **_ignored):
        if dropout_rate and not deterministic:
            raise ValueError("fagen_jax: attention dropout is not supported (dropout_rate="
                             f"{dropout_rate}); use dropout_rate=0 or deterministic=True")
        if dtype is not None:
            query, key, value = (x.astype(dtype) for x in (query, key, value))
        return dot_product_attention(query, key, value, bias=bias, mask=mask,
                                     is_causal=is_causal, **fagen_kwargs)
    return attention_fn


def _linen():
    import flax.linen as nn
    import jax.numpy as jnp

    class LinenSelfAttention(nn.Module):
        """Self-attention with fagen: fused QKV projection, GQA, output projection."""
        num_heads: int
        head_dim: int
        num_kv_heads: int = 0  # 0: num_heads (plain multi-head)
        is_causal: bool = True
        dtype: object = jnp.bfloat16
        param_dtype: object = jnp.float32

        @nn.compact
        def __call__(self, x):
            kv = self.num_kv_heads or self.num_heads
            qkv = nn.DenseGeneral((self.num_heads + 2 * kv, self.head_dim), dtype=self.dtype,
                                  param_dtype=self.param_dtype, name="qkv")(x)
            q, k, v = jnp.split(qkv, [self.num_heads, self.num_heads + kv], axis=-2)
            o = dot_product_attention(q, k, v, is_causal=self.is_causal)
            return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), dtype=self.dtype,
                                   param_dtype=self.param_dtype, name="out")(o)

    return LinenSelfAttention


def _nnx():
    from flax import nnx
    import jax.numpy as jnp

    class NnxSelfAttention(nnx.Module):
        """The nnx form of LinenSelfAttention."""

        def __init__(self, features, num_heads, head_dim, *, num_kv_heads=0, is_causal=True,
                     dtype=jnp.bfloat16, rngs):
            self.num_heads, self.kv = num_heads, num_kv_heads or num_heads
            self.is_causal, self.dtype = is_causal, dtype
            self.qkv = nnx.LinearGeneral(features, (num_heads + 2 * self.kv, head_dim),
                                         dtype=dtype, rngs=rngs)
            self.out = nnx.LinearGeneral((num_heads, head_dim), features, axis=(-2, -1),
                                         dtype=dtype, rngs=rngs)

        def __call__(self, x):
            qkv = self.qkv(x)
            q, k, v = jnp.split(qkv, [self.num_heads, self.num_heads + self.kv], axis=-2)
            return self.out(dot_product_attention(q, k, v, is_causal=self.is_causal))

    return NnxSelfAttention


def __getattr__(name):  # the classes are built on first use (flax imported then)
    if name == "LinenSelfAttention":
        return _linen()
    if name == "NnxSelfAttention":
        return _nnx()
    raise AttributeError(name)
