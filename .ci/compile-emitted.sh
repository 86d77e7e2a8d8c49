#!/usr/bin/env bash
# Every file `fagen --emit` wrote must compile on its own with plain nvcc.
set -euo pipefail
dir="$1"
n=$(ls "$dir"/*.cu | wc -l)
[ "$n" -gt 0 ] || { echo "error: no .cu files in $dir" >&2; exit 1; }
compile() {
  f="$1"
  tok=$(basename "$f" .cu | sed 's/.*_sm/sm_/')   # fwd_..._sm90a -> sm_90a
  nvcc -cubin -arch="$tok" "$f" -o "${f%.cu}.cubin" 2> "${f%.cu}.log" || { cat "${f%.cu}.log"; echo "FAILED: $f"; exit 1; }
}
export -f compile
ls "$dir"/*.cu | xargs -P "$(nproc)" -I{} bash -c 'compile {}'
echo "ok: $n emitted files compile with nvcc"
