#!/usr/bin/env python3
"""A small decoder-only model's training step with fagen, cuDNN and XLA
attention in one run, and forward+backward attention alone through JAX
against the same fagen kernels called from C (fagen-jax-cbench).

Model (flax linen): token embedding, L TinyTransformerBlocks (pre-LayerNorm,
causal self-attention, GELU MLP, remat), final LayerNorm, tied output
projection; bf16 activations, fp32 parameters, AdamW.  The three runs differ
only in the attention function:
  fagen  fagen_jax.dot_product_attention(is_causal=True)
  cudnn  jax.nn.dot_product_attention(implementation="cudnn", is_causal=True)
  xla    jax.nn.dot_product_attention(implementation="xla", is_causal=True)

  python3 bench/jax_train.py [--layers 4] [--dim 1024] [--heads 8] [--seq 2048]
                             [--batch 8] [--steps 20] [--impls fagen,cudnn,xla]
                             [--attn-only] [--cbench build/fagen-jax-cbench]
Times: wall clock over --steps jitted steps queued back to back (after 3
warm-up steps), synchronized at the end; tokens/s = batch*seq*steps/time.
The attention-alone part times jit(grad) of sum(attention * dO), `reps` calls
queued back to back, median of 7 rounds, the same way fagen-jax-cbench does.
"""
import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def attention_impl(name):
    if name == "fagen":
        import fagen_jax
        return functools.partial(fagen_jax.dot_product_attention, is_causal=True)
    return functools.partial(jax.nn.dot_product_attention, is_causal=True, implementation=name)


def make_model(args, attn):
    import flax.linen as nn

    class TinyTransformerBlock(nn.Module):
        dim: int
        heads: int

        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm(dtype=jnp.bfloat16)(x)
            qkv = nn.DenseGeneral((3 * self.heads, self.dim // self.heads),
                                  dtype=jnp.bfloat16)(h)
            q, k, v = jnp.split(qkv, 3, axis=-2)
            o = attn(q, k, v)
            x = x + nn.DenseGeneral(self.dim, axis=(-2, -1), dtype=jnp.bfloat16)(o)
            h = nn.LayerNorm(dtype=jnp.bfloat16)(x)
            h = nn.gelu(nn.Dense(4 * self.dim, dtype=jnp.bfloat16)(h))
            return x + nn.Dense(self.dim, dtype=jnp.bfloat16)(h)

    class Decoder(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            emb = nn.Embed(args.vocab, args.dim, dtype=jnp.bfloat16)
            x = emb(tokens)
            block = nn.remat(TinyTransformerBlock)
            for _ in range(args.layers):
                x = block(args.dim, args.heads)(x)
            x = nn.LayerNorm(dtype=jnp.bfloat16)(x)
            return emb.attend(x).astype(jnp.float32)

    return Decoder()


def train_tokens_per_s(args, impl):
    import optax
    model = make_model(args, attention_impl(impl))
    key = jax.random.PRNGKey(0)
    tokens = jax.random.randint(key, (args.batch, args.seq + 1), 0, args.vocab)
    params = model.init(key, tokens[:, :-1])
    opt = optax.adamw(1e-4)
    state = opt.init(params)

    @jax.jit
    def step(params, state, tokens):
        def loss_fn(p):
            logits = model.apply(p, tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss

    for _ in range(3):
        params, state, loss = step(params, state, tokens)
    jax.block_until_ready(loss)
    first = float(loss)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        params, state, loss = step(params, state, tokens)
    jax.block_until_ready(loss)
    dt = time.perf_counter() - t0
    return args.batch * args.seq * args.steps / dt, first, float(loss)


def attn_fwdbwd_ms(impl, b, s, h, d, reps=20, rounds=7):
    """Forward+backward attention alone through JAX, ms per call."""
    ks = jax.random.split(jax.random.PRNGKey(1), 4)
    q, k, v, do = (jax.random.normal(x, (b, s, h, d), jnp.float32).astype(jnp.bfloat16)
                   for x in ks)
    fn = attention_impl(impl)
    loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) *  # noqa: E731
                                   do.astype(jnp.float32))
    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    jax.block_until_ready(g(q, k, v))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = [g(q, k, v) for _ in range(reps)]
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / reps * 1e3)
    return statistics.median(times)


def c_fwdbwd_ms(cbench, b, s, h, d):
    r = subprocess.run([cbench, str(b), str(s), str(s), str(h), str(h), str(d), "1", "bf16",
                        "20", "7"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return None
    return float(r.stdout.split()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--impls", default="fagen,cudnn,xla")
    p.add_argument("--attn-only", action="store_true", help="skip the training runs")
    p.add_argument("--attn-shapes", default="1024,2048,4096,8192",
                   help="sequence lengths of the attention-alone table (B*S = 16384, "
                        "hidden 2048, d = --attn-dims)")
    p.add_argument("--attn-dims", default="64,128")
    p.add_argument("--cbench", default=None, help="fagen-jax-cbench (default: next to "
                   "libfagen_jax)")
    args = p.parse_args()
    impls = args.impls.split(",")
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")

    if not args.attn_only:
        print(f"\nmodel: {args.layers} layers, dim {args.dim}, {args.heads} heads "
              f"(d{args.dim // args.heads}), seq {args.seq}, batch {args.batch}, causal, bf16\n")
        print("| attention | tokens/s | loss (step 3 -> last) |")
        print("|---|---:|---|")
        for impl in impls:
            try:
                tps, l0, l1 = train_tokens_per_s(args, impl)
                print(f"| {impl} | {tps:,.0f} | {l0:.4f} -> {l1:.4f} |", flush=True)
            except Exception as e:  # a peer that cannot run this shape
                print(f"| {impl} | failed: {type(e).__name__}: {str(e)[:120]} | |", flush=True)

    cbench = args.cbench
    if cbench is None:
        from fagen_jax import _lib
        cbench = os.path.join(os.path.dirname(_lib.load()._name), "fagen-jax-cbench")
    print("\nattention forward+backward alone, causal bf16, B*S = 16384, hidden 2048 (ms)\n")
    print("| d | S | C (fagen-jax-cbench) | JAX fagen | JAX/C | JAX cudnn | fagen/cudnn |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for d in (int(x) for x in args.attn_dims.split(",")):
        for s in (int(x) for x in args.attn_shapes.split(",")):
            b, h = max(16384 // s, 1), 2048 // d
            c = c_fwdbwd_ms(cbench, b, s, h, d) if os.path.exists(cbench) else None
            jf = attn_fwdbwd_ms("fagen", b, s, h, d)
            try:
                jc = attn_fwdbwd_ms("cudnn", b, s, h, d)
            except Exception:
                jc = None
            fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
            ratio = lambda a, b_: "n/a" if a is None or b_ is None else f"{a / b_:.3f}"  # noqa
            print(f"| {d} | {s} | {fmt(c)} | {jf:.3f} | {ratio(jf, c)} | {fmt(jc)} | "
                  f"{ratio(jf, jc)} |", flush=True)


if __name__ == "__main__":
    main()
