#!/usr/bin/env bash
# Every file `fagen --emit` wrote must compile on its own with plain nvcc, and
# nvcc's ptxas must not serialize wgmma products ("Potential Performance
# Loss", a note only -v prints): nvcc's ptxas and NVRTC's can differ there
# (a first-tile S of half width was serialized by nvcc's alone in two
# variants), and tests/test_nvrtc.c checks NVRTC's on the default set only.
set -euo pipefail
dir="$1"
n=$(ls "$dir"/*.cu | wc -l)
[ "$n" -gt 0 ] || { echo "error: no .cu files in $dir" >&2; exit 1; }
compile() {
  f="$1"
  tok=$(basename "$f" .cu | sed 's/.*_sm/sm_/')   # fwd_..._sm90a -> sm_90a
  nvcc -cubin -arch="$tok" -Xptxas -v "$f" -o "${f%.cu}.cubin" 2> "${f%.cu}.log" || { cat "${f%.cu}.log"; echo "FAILED: $f"; exit 1; }
}
export -f compile
ls "$dir"/*.cu | xargs -P "$(nproc)" -I{} bash -c 'compile {}'
if grep -l "Potential Performance Loss" "$dir"/*.log > "$dir/perf-loss.txt"; then
  grep -h "Potential Performance Loss" $(cat "$dir/perf-loss.txt") >&2
  echo "error: nvcc's ptxas serialized wgmma products in $(wc -l < "$dir/perf-loss.txt") of $n emitted files" >&2
  exit 1
fi
echo "ok: $n emitted files compile with nvcc, no wgmma products serialized"
