#!/usr/bin/env bash
# The prepared GPU check (<= 8 minutes on one H100/H200): harness bench, ECT tuning
# steps in fp32 and bf16 with the bf16 error of the ECT target, one FD_DINOv2 call and its cached
# repeat; prints one summary table (scripts/gpu_check.py). Usage, from the repository root:
#   bash scripts/gpu_check.sh [OUT_DIR] [DINOV2_WEIGHTS_FILE]
set -euo pipefail
out="${1:-${OUT:-gpu_check_out}}"
args=(--device cuda --out "$out")
if [[ $# -ge 2 ]]; then args+=(--dinov2-weights "$2"); fi
exec timeout 480 "${PYTHON:-python}" scripts/gpu_check.py "${args[@]}"
