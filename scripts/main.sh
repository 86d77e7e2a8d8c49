#!/usr/bin/env bash
# The main job: install dependencies, build (Release, warnings as errors),
# emit the default kernel set into build/kernels, and — on a machine with a GPU —
# run one attention call and print its error against a float64 reference and
# its speed (fagen-demo; without a GPU it says so and skips).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DFAGEN_WERROR=ON
cmake --build build -j"$(nproc)"
build/fagen --emit -o build/kernels
build/fagen-demo "$@"
