#!/usr/bin/env bash
# libfagen must load on machines without a driver or NVRTC: it may not need
# any CUDA library, nor leave cu*/nvrtc* symbols for the loader to resolve.
set -euo pipefail
lib="$1"
if readelf -d "$lib" | grep NEEDED | grep -Ei 'cuda|nvrtc|cudart'; then
  echo "error: $lib links a CUDA library" >&2; exit 1
fi
if nm -D --undefined-only "$lib" | grep -E ' (cu|nvrtc)[A-Z]'; then
  echo "error: $lib has undefined CUDA symbols" >&2; exit 1
fi
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" {print $3}' | grep -v '^fagen_' || true)
if [ -n "$exported" ]; then
  echo "error: $lib exports non-API symbols: $exported" >&2; exit 1
fi
echo "ok: $lib needs no CUDA library and exports only fagen_* ($(nm -D --defined-only "$lib" | awk '$2 == "T"' | wc -l) functions)"
