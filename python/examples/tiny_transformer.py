#!/usr/bin/env python3
"""TinyTransformerBlock with fagen attention (flax nnx): pre-LayerNorm,
causal self-attention (fagen_jax.nn.NnxSelfAttention, GQA), GELU MLP, remat;
a small GPT-style model trains a few steps on random tokens and prints the
loss.  --attention xla runs the same model with jax.nn's XLA attention (for
comparison, or off a GPU).

  PYTHONPATH=python FAGEN_JAX_LIB=build/libfagen_jax.so python3 python/examples/tiny_transformer.py
"""
import argparse
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import fagen_jax
from fagen_jax.nn import NnxSelfAttention


class XlaSelfAttention(NnxSelfAttention):
    """The same layer with jax.nn's XLA attention (the reference)."""

    def __call__(self, x):
        q, k, v = jnp.split(self.qkv(x), [self.num_heads, self.num_heads + self.kv], axis=-2)
        return self.out(jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                     implementation="xla"))


class TinyTransformerBlock(nnx.Module):
    def __init__(self, dim, heads, kv_heads, attention, *, rngs):
        self.ln1 = nnx.LayerNorm(dim, dtype=jnp.bfloat16, rngs=rngs)
        self.attn = attention(dim, heads, dim // heads, num_kv_heads=kv_heads, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, dtype=jnp.bfloat16, rngs=rngs)
        self.up = nnx.Linear(dim, 4 * dim, dtype=jnp.bfloat16, rngs=rngs)
        self.down = nnx.Linear(4 * dim, dim, dtype=jnp.bfloat16, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(jax.nn.gelu(self.up(self.ln2(x))))


class TinyGPT(nnx.Module):
    def __init__(self, vocab, dim, heads, kv_heads, layers, attention, *, rngs):
        self.embed = nnx.Embed(vocab, dim, dtype=jnp.bfloat16, rngs=rngs)
        self.blocks = nnx.List([TinyTransformerBlock(dim, heads, kv_heads, attention, rngs=rngs)
                                for _ in range(layers)])
        self.ln = nnx.LayerNorm(dim, dtype=jnp.bfloat16, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            # remat: activations inside a block are recomputed in the backward
            x = nnx.remat(lambda b, x: b(x))(block, x)
        return self.embed.attend(self.ln(x)).astype(jnp.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--attention", choices=("fagen", "xla"), default="fagen")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    args = p.parse_args()
    attention = NnxSelfAttention if args.attention == "fagen" else XlaSelfAttention
    model = TinyGPT(vocab=1024, dim=256, heads=4, kv_heads=2, layers=2, attention=attention,
                    rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (args.batch, args.seq + 1), 0, 1024)

    @functools.partial(nnx.jit, donate_argnums=(0, 1))
    def step(model, opt, tokens):
        def loss_fn(m):
            logits = m(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    for i in range(args.steps):
        print(f"step {i}: loss {float(step(model, opt, tokens)):.4f} ({args.attention})")


if __name__ == "__main__":
    if jax.default_backend() != "gpu" and not fagen_jax.available():
        print("note: no GPU here; use --attention xla to run the model without fagen")
    main()
