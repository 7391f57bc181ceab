#!/usr/bin/env bash
# Evaluate a checkpoint (top-1 / top-5, parameter counts, images/s).
#
# Usage: bash scripts/run_eval_gpu.sh CKPT [CONFIG] [DEVICE_ID] [key=value ...] [--test-size=256 ...]
#   CKPT         best.ckpt / last.ckpt written by train.py (it records its config and EBV set)
#   CONFIG       optional YAML applied on top of the checkpoint's config
#   DEVICE_ID    which GPU (default 0)
# Environment: DEVICE_TARGET=GPU (set CPU to run on CPU), PYTHON
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

take_launch_args 9 "checkpoint" "$@"
CKPT="$FIRST"
CONFIG_ARGS=()
if [[ -n "$HOSTFILE" ]]; then
  [[ -f "$HOSTFILE" ]] || die "config file not found: $HOSTFILE"
  CONFIG_ARGS=(--config "$HOSTFILE")
fi
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
check_device_target
case "$DEVICE_TARGET" in
  GPU) export CUDA_VISIBLE_DEVICES="${NUM:-${CUDA_VISIBLE_DEVICES:-0}}" ;;
  Ascend) export DEVICE_ID="${NUM:-${DEVICE_ID:-0}}" ;;
esac
unset MS_ROLE MS_WORKER_NUM MS_SCHED_HOST MS_SCHED_PORT MS_NODE_ID
exec "$PYTHON" "$ROOT/eval.py" --ckpt "$CKPT" "${CONFIG_ARGS[@]}" "${FLAGS[@]}" \
  "device_target=$DEVICE_TARGET" "${OVERRIDES[@]}"
