#!/usr/bin/env bash
# Builds and runs the test suite (CTest over the Criterion tests).  GPU tests
# run when a GPU is present and are reported as skipped otherwise.
#   BUILD_DIR   build folder (default build)
#   extra arguments go to ctest, e.g. -R nvrtc
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BUILD_DIR:-build}"
export PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DFAGEN_WERROR=ON
fi
cmake --build "$dir" -j"$(nproc)"
ctest --test-dir "$dir" -j"$(nproc)" --output-on-failure "$@"
