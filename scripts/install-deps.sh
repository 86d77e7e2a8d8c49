#!/usr/bin/env bash
# Installs what fagen builds with (Debian/Ubuntu): a C compiler, CMake,
# pkg-config, Lua 5.4, Jansson (tuning tables), Criterion and python3-venv (the
# JAX binding's CPU tests).  The CUDA toolkit (headers, NVRTC, nvcc)
# must already be installed: it is checked, not installed (it is large and
# comes from NVIDIA's repositories).
set -euo pipefail
pkgs="build-essential cmake pkg-config liblua5.4-dev libcriterion-dev libjansson-dev python3-venv"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing:$missing"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
fi
cuda="${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}"
if [ ! -f "$cuda/include/cuda.h" ] || [ ! -f "$cuda/include/nvrtc.h" ]; then
  echo "error: no CUDA toolkit headers under $cuda (set CUDA_HOME); install the CUDA toolkit 12 or 13" >&2
  exit 1
fi
if ! ls "$cuda"/lib64/libnvrtc.so* >/dev/null 2>&1; then
  echo "warning: no NVRTC under $cuda/lib64: kernels cannot be compiled at run time" >&2
fi
