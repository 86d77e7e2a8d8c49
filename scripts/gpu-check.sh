#!/usr/bin/env bash
# On a GPU machine (see README, "Tests"): build, run every test (GPU tests
# included), run fagen-demo on a few shapes, run compute-sanitizer memcheck
# and racecheck on small calls, and the runtime benchmark.  Logs go to
# $OUT (or ./gpu-logs; at most 8 files, the device tool's limit); the last
# lines printed are a summary table.
#   scripts/gpu-check.sh [steps...]
#   steps: build test demo sanitize bench sweep peers (default: build test demo sanitize bench)
#   sweep: every valid tile candidate on a few grid cells (choosing defaults)
#   peers: the whole grid against PyTorch SDPA and JAX cuDNN (bench/peers.py)
#   tune:  fagen-autotune over the default set: $out/tune/SLUG.json, report.md, tflops_OP.svg
#   vs:    the standard grid, selected (tables) against heuristic variants, one run
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/gpu-logs}"
mkdir -p "$out"
[ -f .gpu/setup.sh ] && source .gpu/setup.sh .gpu/debs
export PATH=/usr/local/cuda/bin:$PATH
steps="${*:-build test demo sanitize bench}"
export FAGEN_CACHE_DIR="$PWD/build-gpu/cache"
summary=()
note() { summary+=("$1"); echo "$1"; }

for step in $steps; do
  case $step in
  build)
    cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DFAGEN_WERROR=ON > "$out/build.log" 2>&1 &&
      cmake --build build-gpu -j"$(nproc)" >> "$out/build.log" 2>&1
    note "build: rc=$?"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    ;;
  test)
    export FAGEN_CACHE_DIR="$PWD/build-gpu/cache"
    ctest --test-dir build-gpu -j4 --output-on-failure -E '(forward|backward|features)_gpu' > "$out/ctest.log" 2>&1
    note "ctest: rc=$? ($(grep -E 'tests passed' "$out/ctest.log"))"
    # the GPU tests' own lines: error figures per shape, skips
    build-gpu/tests/test_forward_gpu --verbose=1 -j4 > "$out/forward_gpu.log" 2>&1
    note "forward_gpu: $(grep -E 'Synthesis' "$out/forward_gpu.log")"
    build-gpu/tests/test_backward_gpu --verbose=1 -j8 > "$out/backward_gpu.log" 2>&1
    note "backward_gpu: $(grep -E 'Synthesis' "$out/backward_gpu.log")"
    grep -E '^\s+(bf16|fp16) ' "$out/backward_gpu.log" | sort | tail -40
    build-gpu/tests/test_features_gpu --verbose=1 -j8 > "$out/features_gpu.log" 2>&1
    note "features_gpu: $(grep -E 'Synthesis' "$out/features_gpu.log")"
    ;;
  demo)
    for args in "--seqlen 2048 --head-dim 128" "--seqlen 4096 --head-dim 64 --causal --fp16" \
                "--batch 1 --seqlen 1000 --heads 16 --heads-kv 2 --head-dim 256"; do
      build-gpu/fagen-demo $args >> "$out/demo.log" 2>&1
      note "demo $args: rc=$? $(tail -2 "$out/demo.log" | tr -s ' ' | tr '\n' ' ')"
    done
    ;;
  sanitize)
    for tool in memcheck racecheck synccheck; do
      for args in "--batch 1 --seqlen 129 --heads 2 --head-dim 64 --causal" \
                  "--batch 2 --seqlen 77 --heads 4 --heads-kv 2 --head-dim 40 --fp16"; do
        compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/fagen-demo $args \
          > "$out/sanitize-one.log" 2>&1
        rc=$?
        cat "$out/sanitize-one.log" >> "$out/sanitize.log"
        note "compute-sanitizer $tool ($args): rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize-one.log" | tail -1)"
        rm -f "$out/sanitize-one.log"
      done
      # the backward: small shapes of the GPU test (atomic and deterministic
      # modes, GQA, odd lengths, d32..d256)
      for f in seqlen_1_and_7 gqa_ratios_1_2_8 every_head_dim; do
        compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/tests/test_backward_gpu \
          --filter "backward_gpu/$f" > "$out/sanitize-one.log" 2>&1
        rc=$?
        cat "$out/sanitize-one.log" >> "$out/sanitize.log"
        note "compute-sanitizer $tool (backward_gpu/$f): rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize-one.log" | tail -1)"
        rm -f "$out/sanitize-one.log"
      done
    done
    ;;
  bench)
    build-gpu/fagen-bench-runtime --reps 7 > "$out/bench-runtime.log" 2>&1
    note "bench-runtime: rc=$?"
    cat "$out/bench-runtime.log"
    ;;
  sweep)
    build-gpu/fagen-bench --candidates --jobs 16 --head-dims "${SWEEP_DIMS:-64,128,256}" \
      --seqlens "${SWEEP_SEQLENS:-4096,16384}" --reps 10 > "$out/sweep.log" 2>&1
    note "sweep: rc=$?"
    grep -E "best|default" "$out/sweep.log"
    ;;
  tune)
    # The user table goes to $out/tune/SLUG.json, where the vs step reads it.
    export FAGEN_TUNE_DIR="$out/tune"
    mkdir -p "$FAGEN_TUNE_DIR"
    build-gpu/fagen-autotune --report "$out" ${TUNE_ARGS:-} > "$out/tune.log" 2>&1
    note "tune: rc=$? $(grep -E 'compiled [0-9]|wrote' "$out/tune.log" | tr '\n' ' ')"
    ;;
  vs)
    build-gpu/fagen-bench --vs-heuristic --reps 15 > "$out/vs.log" 2>&1
    note "vs: rc=$?"
    sed -n '/^| d | S/,$p' "$out/vs.log"
    ;;
  peers)
    PYTHONUNBUFFERED=1 python3 bench/peers.py --bench build-gpu/fagen-bench --json "$out/peers.json" \
      > "$out/peers.log" 2>&1
    note "peers: rc=$?"
    sed -n '/^| d | S/,$p' "$out/peers.log"
    ;;
  esac
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
