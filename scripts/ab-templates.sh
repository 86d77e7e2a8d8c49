#!/usr/bin/env bash
# A/B timing of template folders on a GPU: runs fagen-bench once per folder,
# twice over in alternating order (A B ... A B ...) so that drift between runs
# shows as disagreement between the two passes, and prints one table.
#   scripts/ab-templates.sh "BENCH ARGS" DIR... ("builtin" = the templates built in)
# e.g. scripts/ab-templates.sh "--head-dims 64 --seqlens 4096 --causal yes" builtin /tmp/exp
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .gpu/setup.sh ] && source .gpu/setup.sh .gpu/debs >/dev/null
bench="${BENCH:-build-gpu/fagen-bench}"
args="$1"
shift
out="${OUT:-/tmp}/ab"
mkdir -p "$out"
for pass in 1 2; do
  for dir in "$@"; do
    tag=$(basename "$dir")
    if [ "$dir" = builtin ]; then unset FAGEN_TEMPLATE_DIR; else export FAGEN_TEMPLATE_DIR="$dir"; fi
    FAGEN_CACHE_DIR="$out/cache-$tag" $bench $args --reps 15 > "$out/$tag.$pass.log" 2>&1 ||
      { echo "$tag pass $pass failed:"; tail -5 "$out/$tag.$pass.log"; }
  done
done
unset FAGEN_TEMPLATE_DIR
python3 - "$out" "$@" <<'PY'
import sys, re, os
out, dirs = sys.argv[1], sys.argv[2:]
tags = [os.path.basename(d) for d in dirs]
cells, res = [], {}
for t in tags:
    for p in (1, 2):
        for line in open(f"{out}/{t}.{p}.log"):
            f = [x.strip() for x in line.split("|")]
            if len(f) > 9 and f[1].isdigit():
                key = (int(f[1]), int(f[2]), f[3])
                if key not in cells: cells.append(key)
                res.setdefault((t, key), []).append(float(f[9]))
print("| d | S | causal | " + " | ".join(tags) + " |")
print("|---|---|---|" + "---|" * len(tags))
for k in cells:
    print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(
        "/".join(f"{x:.0f}" for x in res.get((t, k), [])) for t in tags) + " |")
PY
