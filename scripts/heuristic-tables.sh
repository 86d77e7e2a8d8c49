#!/usr/bin/env bash
# Regenerates the shipped tables that hold the heuristic (not measured) for
# GPUs we cannot measure on: the A100s.  Run it after a template change (the
# tables record the template hash) and commit tables/.  An A100 owner replaces
# one with a measured table by running `fagen-autotune` on the A100 and copying
# the user table it names into tables/.
set -euo pipefail
cd "$(dirname "$0")/.."
tool="${AUTOTUNE:-build/fagen-autotune}"
for dev in "NVIDIA A100-SXM4-80GB,sm_80,108" "NVIDIA A100-SXM4-40GB,sm_80,108" \
           "NVIDIA A100-PCIE-40GB,sm_80,108" "NVIDIA A100 80GB PCIe,sm_80,108"; do
  slug=$(build/fagen tune show --device "$dev" | sed -n 's/^device:.*-> //p')
  "$tool" --heuristic-table --device "$dev" --seqlens 4096 --out "tables/$slug.json"
done
