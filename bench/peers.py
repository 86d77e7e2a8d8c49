#!/usr/bin/env python3
"""fagen against its peers, measured in one run on one GPU.

Runs fagen-bench on the standard grid (B*S = 16384 tokens, hidden 2048),
then PyTorch SDPA with the FLASH_ATTENTION and CUDNN_ATTENTION backends, then
jax.nn.dot_product_attention(implementation="cudnn") in a separate process,
all on the same shapes (layout [B, S, H, D], random inputs, bf16), and prints
one table with fagen's TFLOPS and its ratio to each peer.

  python3 bench/peers.py [--bench build/fagen-bench] [--head-dims 64,128,256]
                         [--seqlens 512,...,16384] [--causal both] [--reps 20]
                         [--json results.json] [--skip-jax]
TFLOPS count 4*B*H*S^2*d, halved when causal; times are medians of CUDA-event
(torch, fagen) or synchronized wall-clock (JAX) measurements after warm-up.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

TOKENS, HIDDEN = 16384, 2048


def grid(args):
    for d in args.head_dims:
        for s in args.seqlens:
            for causal in args.causal:
                yield d, s, causal, max(TOKENS // s, 1), HIDDEN // d


def flops(d, s, causal, b, h):
    return 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)


def run_fagen(args):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [args.bench, "--head-dims", ",".join(map(str, args.head_dims)),
           "--seqlens", ",".join(map(str, args.seqlens)),
           "--causal", "both" if len(args.causal) == 2 else ("yes" if args.causal[0] else "no"),
           "--reps", str(args.reps), "--json", path]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(path) as f:
        data = json.load(f)
    os.unlink(path)
    return {(c["head_dim"], c["seqlen"], c["causal"]): c["tflops"] for c in data["cells"]
            if c["default"]}


def run_torch(args):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    out = {}
    for d, s, causal, b, h in grid(args):
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, D] views of [B, S, H, D]
        for name, backend in (("torch-flash", SDPBackend.FLASH_ATTENTION),
                              ("torch-cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel(backend):
                    fn = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                    for _ in range(3):
                        fn()
                    times = []
                    for _ in range(args.reps):
                        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        e0.record()
                        fn()
                        e1.record()
                        e1.synchronize()
                        times.append(e0.elapsed_time(e1))
                times.sort()
                out[(name, d, s, causal)] = flops(d, s, causal, b, h) / (times[len(times) // 2] * 1e-3) * 1e-12
            except Exception as e:  # a backend that refuses a shape
                print(f"{name} d={d} S={s} causal={causal}: {type(e).__name__}: {e}", file=sys.stderr)
        del q, k, v, qt, kt, vt
        torch.cuda.empty_cache()
    return out


JAX_CODE = r"""
import json, sys, time
import jax, jax.numpy as jnp
cells, reps = json.loads(sys.argv[1]), int(sys.argv[2])
res = {}
for d, s, causal, b, h in cells:
    key = jax.random.PRNGKey(0)
    q, k, v = (jax.random.normal(jax.random.fold_in(key, i), (b, s, h, d), jnp.bfloat16) for i in range(3))
    f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn"))
    try:
        for _ in range(3):
            f(q, k, v).block_until_ready()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f(q, k, v).block_until_ready()
            times.append(time.perf_counter() - t0)
        times.sort()
        res[f"{d},{s},{int(causal)}"] = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0) / times[len(times) // 2] * 1e-12
    except Exception as e:
        print(f"jax-cudnn d={d} S={s}: {type(e).__name__}: {e}", file=sys.stderr)
print(json.dumps(res))
"""


def run_jax(args):
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    cells = list(grid(args))
    r = subprocess.run([sys.executable, "-c", JAX_CODE, json.dumps(cells), str(args.reps)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return {}
    sys.stderr.write(r.stderr[-2000:] if "jax-cudnn" in r.stderr else "")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return {("jax-cudnn", int(k.split(",")[0]), int(k.split(",")[1]), bool(int(k.split(",")[2]))): v
            for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/fagen-bench")
    ap.add_argument("--head-dims", default="64,128,256")
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--causal", default="both", choices=["no", "yes", "both"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("--skip-jax", action="store_true")
    args = ap.parse_args()
    args.head_dims = [int(x) for x in args.head_dims.split(",")]
    args.seqlens = [int(x) for x in args.seqlens.split(",")]
    args.causal = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    fagen = run_fagen(args)
    peers = run_torch(args)
    if not args.skip_jax:
        peers.update(run_jax(args))
    names = ["torch-flash", "torch-cudnn"] + ([] if args.skip_jax else ["jax-cudnn"])
    print()
    print("| d | S | causal | fagen TFLOPS | " + " | ".join(f"{n} | ratio" for n in names) + " |")
    print("|---|---|---|---|" + "---|---|" * len(names))
    rows = []
    for d, s, causal, b, h in grid(args):
        f = fagen.get((d, s, causal))
        cols = []
        row = {"head_dim": d, "seqlen": s, "causal": causal, "fagen": f}
        for n in names:
            p = peers.get((n, d, s, causal))
            row[n] = p
            cols.append(f"{p:.0f} | {f / p:.2f}x" if p and f else "- | -")
        rows.append(row)
        print(f"| {d} | {s} | {'yes' if causal else 'no'} | {f:.0f} | " + " | ".join(cols) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
