#!/usr/bin/env python3
"""fagen against its peers, measured in one run on one GPU.

--mode fwd (the default): runs fagen-bench on the standard grid (B*S = 16384
tokens, hidden 2048), then PyTorch SDPA with the FLASH_ATTENTION and
CUDNN_ATTENTION backends, then jax.nn.dot_product_attention(
implementation="cudnn") in a separate process, all on the same shapes (layout
[B, S, H, D], random inputs, bf16), and prints one table with fagen's TFLOPS
and its ratio to each peer.

--mode bwd / --mode fwdbwd: the backward alone (given O and the LSE of a
forward computed once), or forward plus backward, of fagen (called through
python/fagen_ctypes.py, in this process) and of the same two PyTorch SDPA
backends, on the same grid and the same inputs.  JAX is not measured in these
modes.  --deterministic times fagen's bitwise-reproducible backward.

--check-grads: instead of timing, checks fagen's dQ, dK, dV (and O) against
PyTorch's SDPA MATH backend in float32 on the grid cells whose S is in
--check-shapes (default 1024 and 4096), plus one GQA case (heads_kv =
heads_q / 4) and one case whose q, k, v (and dq, dk, dv) are slices of packed
[B, S, 3, H, D] tensors; prints relative errors ||x - ref|| / ||ref|| next to
those of torch's FLASH_ATTENTION bf16 gradients, and exits 1 if any fagen
error is 1e-2 or more.

  python3 bench/peers.py [--mode fwd|bwd|fwdbwd] [--bench build/fagen-bench]
                         [--lib build/libfagen.so] [--head-dims 64,128,256]
                         [--seqlens 512,...,16384] [--causal both] [--reps 20]
                         [--deterministic] [--json results.json] [--skip-jax]
                         [--check-grads [--check-shapes 1024,4096|all]]
  python3 bench/peers.py --mode fwdbwd --head-dims 64,128,256 --skip-jax

TFLOPS count 4*B*H*S^2*d for the forward, halved when causal; 2.5 times that
for the backward and 3.5 times for forward plus backward.  Times are medians
of CUDA-event (torch, fagen) or synchronized wall-clock (JAX) measurements
after warm-up; in the bwd modes a spin kernel queued before each measurement
keeps host-side launch work (Python, ctypes, autograd) out of the times.
libfagen for the bwd modes: --lib, else $FAGEN_LIB, else
libfagen.so next to --bench, else build/ or build-gpu/.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

TOKENS, HIDDEN = 16384, 2048
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Work of each mode in units of the forward's 4*B*H*S^2*d (BASELINES).
FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}
TORCH_PEERS = ("torch-flash", "torch-cudnn")
# A fagen gradient whose relative error reaches this fails --check-grads (bf16).
GRAD_TOLERANCE = 1e-2
# GPU clock cycles of the spin that hides host work in the bwd modes' timing
# (about 1 ms at 2 GHz: more than one Python call queues in).
SPIN_CYCLES = 2_000_000


def grid(args):
    for d in args.head_dims:
        for s in args.seqlens:
            for causal in args.causal:
                yield d, s, causal, max(TOKENS // s, 1), HIDDEN // d


def flops(d, s, causal, b, h, mode="fwd"):
    return 4.0 * b * h * s * s * d * (0.5 if causal else 1.0) * FLOP_FACTOR[mode]


def median_ms(fn, reps, warmup=3, hide_host=False):
    """Median over reps of fn's GPU time in ms (CUDA events on the current
    stream around each call), after warmup untimed calls.  hide_host: keep
    the GPU busy (a spin kernel of about a millisecond) while the host queues
    the first event and fn's launches, so that the time is that of the
    kernels and not of the Python, ctypes or autograd work before them."""
    import torch
    for _ in range(warmup):
        fn()
    sleep = getattr(torch.cuda, "_sleep", None) if hide_host else None
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if sleep:
            sleep(SPIN_CYCLES)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    times.sort()
    return times[len(times) // 2]


def torch_backends():
    """(name, SDPBackend) of the torch peers."""
    from torch.nn.attention import SDPBackend
    return (("torch-flash", SDPBackend.FLASH_ATTENTION),
            ("torch-cudnn", SDPBackend.CUDNN_ATTENTION))


# --------------------------------------------------------------------------
# --mode fwd: fagen-bench, torch SDPA, JAX cuDNN
# --------------------------------------------------------------------------

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
    from torch.nn.attention import sdpa_kernel
    import torch.nn.functional as F
    out = {}
    for d, s, causal, b, h in grid(args):
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, D] views of [B, S, H, D]
        for name, backend in torch_backends():
            try:
                with sdpa_kernel(backend):
                    fn = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                    ms = median_ms(fn, args.reps)
                out[(name, d, s, causal)] = flops(d, s, causal, b, h) / (ms * 1e-3) * 1e-12
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


# --------------------------------------------------------------------------
# --mode bwd / fwdbwd: fagen through ctypes and torch SDPA, in this process
# --------------------------------------------------------------------------

def load_fagen(args):
    """A fagen_ctypes.Fagen over --lib, $FAGEN_LIB, the libfagen.so next to
    --bench, or fagen_ctypes' default search (build/, build-gpu/)."""
    sys.path.insert(0, os.path.join(REPO, "python"))
    from fagen_ctypes import Fagen
    lib = args.lib or os.environ.get("FAGEN_LIB")
    if not lib:
        beside = os.path.join(os.path.dirname(os.path.abspath(args.bench)), "libfagen.so")
        lib = beside if os.path.exists(beside) else None
    fg = Fagen(lib)
    print(f"fagen {fg.version()} from {fg.lib_path}", file=sys.stderr, flush=True)
    return fg


def time_fagen(fg, args, q, k, v, dout, causal):
    """Median ms of fagen's backward (mode bwd: O and LSE computed once
    before) or forward then backward (mode fwdbwd).  Outputs and the
    workspace are allocated once, outside the timed calls."""
    import torch
    o, lse = fg.forward(q, k, v, causal)
    dq, dk, dv = (torch.empty_like(x) for x in (q, k, v))
    ws = torch.empty(fg.backward_workspace_bytes(q, k, v, causal, deterministic=args.deterministic),
                     dtype=torch.uint8, device=q.device)

    def bwd():
        fg.backward(q, k, v, o, lse, dout, causal, deterministic=args.deterministic,
                    workspace=ws, dq=dq, dk=dk, dv=dv)

    def fwdbwd():
        fg.forward(q, k, v, causal, out=o, lse=lse)
        bwd()

    return median_ms(bwd if args.mode == "bwd" else fwdbwd, args.reps, hide_host=True)


def time_torch(backend, args, q, k, v, dout, causal):
    """Median ms of torch SDPA's backward (mode bwd: autograd.grad of an
    output computed once, graph retained) or forward then backward (mode
    fwdbwd) under one backend.  q, k, v are [B, S, H, D] leaves that require
    grad; SDPA sees their [B, H, S, D] transposed views."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    with sdpa_kernel(backend):
        def sdpa():
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
        out = sdpa()
        # dO with the values of dout in the layout of the backend's output
        # (some cuDNN backward versions insist on matching strides).
        dout_t = torch.empty_like(out).copy_(dout.transpose(1, 2))
        if args.mode == "bwd":
            fn = lambda: torch.autograd.grad(out, (q, k, v), dout_t, retain_graph=True)
        else:
            fn = lambda: torch.autograd.grad(sdpa(), (q, k, v), dout_t)
        return median_ms(fn, args.reps, hide_host=True)


def run_training(args):
    """fagen's and the torch peers' TFLOPS in --mode bwd or fwdbwd, cell by
    cell on one set of inputs per cell."""
    import torch
    fg = load_fagen(args)
    fagen, peers = {}, {}
    for d, s, causal, b, h in grid(args):
        work = flops(d, s, causal, b, h, args.mode)
        q, k, v, dout = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
                         for _ in range(4))
        tag = f"d={d} S={s} causal={'yes' if causal else 'no'}"
        try:
            ms = time_fagen(fg, args, q, k, v, dout, causal)
            fagen[(d, s, causal)] = work / (ms * 1e-3) * 1e-12
            print(f"fagen {args.mode} {tag}: {fagen[(d, s, causal)]:.0f} TFLOPS",
                  file=sys.stderr, flush=True)
        except Exception as e:  # a fagen error (RuntimeError) or out of memory
            print(f"fagen {tag}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        for x in (q, k, v):
            x.requires_grad_(True)
        for name, backend in torch_backends():
            try:
                ms = time_torch(backend, args, q, k, v, dout, causal)
                peers[(name, d, s, causal)] = work / (ms * 1e-3) * 1e-12
            except Exception as e:  # a backend that refuses a shape
                print(f"{name} {tag}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        del q, k, v, dout
        torch.cuda.empty_cache()
    fg.close()
    return fagen, peers


# --------------------------------------------------------------------------
# --check-grads
# --------------------------------------------------------------------------

def reference_grads(q, k, v, dout, causal):
    """O, dQ, dK, dV in float32 from SDPA's MATH backend on float32 copies of
    the [B, S, H, D] inputs; GQA by repeating each kv head over its group of
    query heads (q head i uses kv head i // (Hq / Hkv)).  Computed in chunks
    of one batch element and a few kv heads so that the score matrices stay
    near 256 MiB."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    f32 = dict(dtype=torch.float32, device=q.device)
    o_ref, dq_ref = torch.empty(q.shape, **f32), torch.empty(q.shape, **f32)
    dk_ref, dv_ref = torch.empty(k.shape, **f32), torch.empty(k.shape, **f32)
    step = max(1, min(hkv, (256 << 20) // (4 * sq * sk * g)))
    for i in range(b):
        for j0 in range(0, hkv, step):
            j1 = min(hkv, j0 + step)
            qh, kh = slice(j0 * g, j1 * g), slice(j0, j1)
            qf = q[i:i + 1, :, qh].detach().float().requires_grad_()
            kf = k[i:i + 1, :, kh].detach().float().requires_grad_()
            vf = v[i:i + 1, :, kh].detach().float().requires_grad_()
            kr, vr = (x.repeat_interleave(g, dim=2) if g > 1 else x for x in (kf, vf))
            with sdpa_kernel(SDPBackend.MATH):
                o = F.scaled_dot_product_attention(qf.transpose(1, 2), kr.transpose(1, 2),
                                                   vr.transpose(1, 2), is_causal=causal)
            grads = torch.autograd.grad(o, (qf, kf, vf),
                                        dout[i:i + 1, :, qh].float().transpose(1, 2))
            o_ref[i:i + 1, :, qh] = o.detach().transpose(1, 2)
            dq_ref[i:i + 1, :, qh], dk_ref[i:i + 1, :, kh], dv_ref[i:i + 1, :, kh] = grads
    return o_ref, dq_ref, dk_ref, dv_ref


def flash_grads(q, k, v, dout, causal):
    """dQ, dK, dV of torch SDPA FLASH_ATTENTION on the bf16 inputs (GQA by
    repeating k and v), or None where the backend refuses the shape."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = q.shape[2] // k.shape[2]
    qg, kg, vg = (x.detach().clone().requires_grad_() for x in (q, k, v))
    kr, vr = (x.repeat_interleave(g, dim=2) if g > 1 else x for x in (kg, vg))
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = F.scaled_dot_product_attention(qg.transpose(1, 2), kr.transpose(1, 2),
                                               vr.transpose(1, 2), is_causal=causal)
        return torch.autograd.grad(o, (qg, kg, vg), dout.transpose(1, 2))
    except Exception as e:
        print(f"torch-flash: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def fmt_err(e):
    return "-" if e is None else f"{e:.2e}"


def rel_err(x, ref):
    """||x - ref|| / ||ref|| (Frobenius, over the whole tensor), in float64;
    NaN anywhere gives NaN."""
    ref = ref.double()
    return ((x.double() - ref).norm() / ref.norm()).item()


def check_cases(args):
    """The --check-grads cases: (label, d, S, causal, B, Hq, Hkv, packed)."""
    if args.check_shapes == "all":
        seqlens = set(args.seqlens)
    else:
        seqlens = {int(x) for x in args.check_shapes.split(",")}
    cases = [("grid", d, s, causal, b, h, h, False) for d, s, causal, b, h in grid(args)
             if s in seqlens]
    # One GQA case and one packed-QKV case at a middle head_dim and the
    # smallest checked sequence length.
    d = 128 if 128 in args.head_dims else args.head_dims[0]
    s = min(seqlens)
    b, h = max(TOKENS // s, 1), HIDDEN // d
    if h >= 4 and h % 4 == 0:
        cases.append(("gqa", d, s, args.causal[-1], b, h, h // 4, False))
    cases.append(("packed", d, s, args.causal[0], b, h, h, True))
    return cases


def run_check(args):
    """Runs the --check-grads cases; prints their table and returns
    (all passed, rows)."""
    import warnings
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False  # a float32 reference, not TF32
    # torch's autograd worker thread may warn once that it had no CUDA context
    # of its own when it first uses cuBLAS; harmless, and it splits the table.
    warnings.filterwarnings("ignore", message="Attempting to run cuBLAS, but there was no current CUDA context")
    fg = load_fagen(args)
    names = ("o", "dq", "dk", "dv")
    print()
    print("| case | d | S | causal | B | Hq | Hkv | " + " | ".join(f"fagen {n}" for n in names) +
          " | " + " | ".join(f"flash {n}" for n in names[1:]) + " | result |")
    print("|---|---|---|---|---|---|---|" + "---|" * (2 * len(names) - 1) + "---|")
    ok_all, rows = True, []
    for label, d, s, causal, b, hq, hkv, packed in check_cases(args):
        torch.manual_seed(0)
        dev = dict(device="cuda", dtype=torch.bfloat16)
        row = {"case": label, "head_dim": d, "seqlen": s, "causal": causal, "batch": b,
               "heads_q": hq, "heads_kv": hkv, "deterministic": args.deterministic}
        if packed:  # q, k, v and dq, dk, dv as slices of [B, S, 3, H, D]
            q, k, v = torch.randn(b, s, 3, hq, d, **dev).unbind(2)
            grads_out = torch.empty(b, s, 3, hq, d, **dev).unbind(2)
        else:
            q = torch.randn(b, s, hq, d, **dev)
            k, v = (torch.randn(b, s, hkv, d, **dev) for _ in range(2))
            grads_out = (None, None, None)
        dout = torch.randn(b, s, hq, d, **dev)
        err, note = {}, ""
        try:
            o, lse = fg.forward(q, k, v, causal)
            dq, dk, dv = fg.backward(q, k, v, o, lse, dout, causal,
                                     deterministic=args.deterministic,
                                     dq=grads_out[0], dk=grads_out[1], dv=grads_out[2])
            if args.deterministic:  # a second run must give the same bits
                again = fg.backward(q, k, v, o, lse, dout, causal, deterministic=True)
                if not all(torch.equal(x, y) for x, y in zip((dq, dk, dv), again)):
                    note = "not reproducible"
                del again
            torch.cuda.synchronize()
            refs = reference_grads(q, k, v, dout, causal)
            for n, x, ref in zip(names, (o, dq, dk, dv), refs):
                err["fagen " + n] = rel_err(x, ref)
            flash = flash_grads(q, k, v, dout, causal)
            for n, x, ref in zip(names[1:], flash or (None,) * 3, refs[1:]):
                err["flash " + n] = rel_err(x, ref) if x is not None else None
            del o, lse, dq, dk, dv, refs, flash
        except (RuntimeError, ValueError) as e:  # fagen's errors, out of memory
            note = str(e).splitlines()[0]
            print(f"{label} d={d} S={s}: {e}", file=sys.stderr)
        fagen_errs = [err.get("fagen " + n) for n in names]
        bad = [e for e in fagen_errs if e is None or not e < GRAD_TOLERANCE]
        ok = not bad and not note
        ok_all &= ok
        row.update(err, passed=ok, note=note)
        rows.append(row)
        print(f"| {label} | {d} | {s} | {'yes' if causal else 'no'} | {b} | {hq} | {hkv} | " +
              " | ".join(fmt_err(err.get("fagen " + n)) for n in names) + " | " +
              " | ".join(fmt_err(err.get("flash " + n)) for n in names[1:]) + " | " +
              ("ok" if ok else "FAIL" + (f": {note}" if note else "")) + " |", flush=True)
        del q, k, v, dout, grads_out
        torch.cuda.empty_cache()
    fg.close()
    print(f"\n{'all passed' if ok_all else 'FAILED'}: fagen relative errors must be below "
          f"{GRAD_TOLERANCE:g} (bf16; reference: SDPA MATH in float32)")
    return ok_all, rows


# --------------------------------------------------------------------------

def print_table(args, fagen, peers, names):
    """The markdown table (fagen's TFLOPS, each peer's and fagen/peer), then
    the geometric mean of each peer's ratios; returns the JSON rows."""
    print()
    if args.mode != "fwd":
        print(f"mode {args.mode}{' (deterministic)' if args.deterministic else ''}, bf16, "
              f"TFLOPS = {FLOP_FACTOR[args.mode]:g} x 4*B*H*S^2*d (halved when causal)")
        print()
    print("| d | S | causal | fagen TFLOPS | " + " | ".join(f"{n} | ratio" for n in names) + " |")
    print("|---|---|---|---|" + "---|---|" * len(names))
    rows, ratios = [], {n: [] for n in names}
    for d, s, causal, b, h in grid(args):
        f = fagen.get((d, s, causal))
        cols = []
        row = {"head_dim": d, "seqlen": s, "causal": causal, "fagen": f}
        if args.mode != "fwd":
            row.update(mode=args.mode, deterministic=args.deterministic)
        for n in names:
            p = peers.get((n, d, s, causal))
            row[n] = p
            cols.append(f"{p:.0f} | {f / p:.2f}x" if p and f else "- | -")
            if p and f:
                ratios[n].append(f / p)
        rows.append(row)
        fs = f"{f:.0f}" if f else "-"
        print(f"| {d} | {s} | {'yes' if causal else 'no'} | {fs} | " + " | ".join(cols) + " |")
    print()
    for n in names:
        r = ratios[n]
        if r:
            gm = math.exp(sum(math.log(x) for x in r) / len(r))
            print(f"geometric mean of fagen/{n} over {len(r)} cells: {gm:.3f}x")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="fwd", choices=["fwd", "bwd", "fwdbwd"],
                    help="what is timed: forward (default), backward, forward+backward")
    ap.add_argument("--bench", default="build/fagen-bench")
    ap.add_argument("--lib", help="libfagen.so for the bwd modes and --check-grads")
    ap.add_argument("--head-dims", default="64,128,256")
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--causal", default="both", choices=["no", "yes", "both"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--deterministic", action="store_true",
                    help="fagen's deterministic backward (bwd modes, --check-grads)")
    ap.add_argument("--json")
    ap.add_argument("--skip-jax", action="store_true")
    ap.add_argument("--check-grads", action="store_true",
                    help="check gradients against float32 SDPA instead of timing; exit 1 on failure")
    ap.add_argument("--check-shapes", default="1024,4096",
                    help="sequence lengths of the grid checked by --check-grads, or 'all'")
    args = ap.parse_args()
    args.head_dims = [int(x) for x in args.head_dims.split(",")]
    args.seqlens = [int(x) for x in args.seqlens.split(",")]
    args.causal = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]

    if args.check_grads:
        ok, rows = run_check(args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        sys.exit(0 if ok else 1)

    if args.mode == "fwd":
        if args.deterministic:
            print("--deterministic applies to the backward only: ignored in --mode fwd",
                  file=sys.stderr)
        fagen = run_fagen(args)
        peers = run_torch(args)
        if not args.skip_jax:
            peers.update(run_jax(args))
        names = list(TORCH_PEERS) + ([] if args.skip_jax else ["jax-cudnn"])
    else:
        if not args.skip_jax:
            print(f"jax-cudnn skipped: --mode {args.mode} measures fagen and torch only",
                  file=sys.stderr)
        fagen, peers = run_training(args)
        names = list(TORCH_PEERS)
    rows = print_table(args, fagen, peers, names)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
