#!/usr/bin/env bash
# A/B timing of template folders on a GPU: runs fagen-bench once per folder,
# twice over in alternating order (A B ... A B ...) so that drift between runs
# shows as disagreement between the two passes, and prints one table with a
# row per cell and variant (several per cell with --variant; each folder's
# best pass, and with two folders their ratio and its geometric mean).
#   scripts/ab-templates.sh "BENCH ARGS" DIR... ("builtin" = the templates built in)
# e.g. scripts/ab-templates.sh "--head-dims 64 --seqlens 4096 --causal yes" builtin /tmp/exp
# Only valid while the host code agrees with every folder's templates (the
# kernel parameters, the shared-memory model); a folder whose templates do
# not match the tuning tables runs each call's heuristic variant, so force
# the variants to compare with --variant.
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
    if [ "$dir" = builtin ]; then unset FAGEN_TEMPLATE_DIR; else export FAGEN_TEMPLATE_DIR="$(realpath "$dir")"; fi
    # shellcheck disable=SC2086
    FAGEN_CACHE_DIR="$out/cache-$tag" $bench $args > "$out/$tag.$pass.log" 2>&1 ||
      { echo "$tag pass $pass failed:"; grep -v '^|' "$out/$tag.$pass.log" | tail -5; }
  done
done
unset FAGEN_TEMPLATE_DIR
python3 scripts/ab_table.py "$out" "$@"
