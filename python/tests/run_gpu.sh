#!/usr/bin/env bash
# On the GPU machine, from the repository root: builds libfagen_jax and
# fagen-jax-cbench (build-gpu-jax), runs the fagen_jax tests, then
# bench/jax_train.py.  Logs under $OUT (or ./gpu-logs).
#   python/tests/run_gpu.sh [test] [bench] [train]   (default: all three)
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-logs}"
mkdir -p "$out"
[ -f .gpu/setup.sh ] && source .gpu/setup.sh .gpu/debs
export PATH=/usr/local/cuda/bin:$PATH
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export FAGEN_CACHE_DIR="$PWD/build-gpu-jax/cache" PYTHONPATH="$PWD/python" PYTHONUNBUFFERED=1
steps="${*:-test bench train}"
python3 -c 'import jax, jaxlib, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cmake -S . -B build-gpu-jax -DCMAKE_BUILD_TYPE=Release -DFAGEN_JAX=ON -DFAGEN_BUILD_TESTS=OFF \
  > "$out/build.log" 2>&1 && cmake --build build-gpu-jax -j16 --target fagen_jax fagen_jax_cbench \
  >> "$out/build.log" 2>&1
rc=$?; echo "build: rc=$rc"; [ $rc -ne 0 ] && { tail -30 "$out/build.log"; exit 1; }
export FAGEN_JAX_LIB="$PWD/build-gpu-jax/libfagen_jax.so"
for s in $steps; do
  case $s in
  test) python3 -m pytest -rs -q --timeout 400 python/tests 2>&1 | tee "$out/pytest.log" | tail -40 ;;
  bench) python3 bench/jax_train.py --attn-only --attn-dims 64,128 --attn-shapes 1024,2048,4096,8192 \
           2>&1 | tee "$out/attn.log" | grep -v Warning ;;
  train) python3 bench/jax_train.py --steps 15 --attn-shapes 2048 --attn-dims 128 2>&1 \
           | tee "$out/train.log" | grep -v Warning ;;
  esac
done
