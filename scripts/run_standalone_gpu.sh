#!/usr/bin/env bash
# Single-device training.
#
# Usage: bash scripts/run_standalone_gpu.sh CONFIG [DEVICE_ID] [key=value ...] [--resume]
#   DEVICE_ID    which GPU (default 0); the process sees only that card (CUDA_VISIBLE_DEVICES)
# Environment: DEVICE_TARGET=GPU (set CPU to run on CPU), PYTHON, ENTRY=train.py
# Log: OUTPUT_DIR/logs/rank_0.log (stdout + stderr, also shown here); train.py writes its own
# train.log / metrics.jsonl / checkpoints in OUTPUT_DIR.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

take_launch_args 9 "config file" "$@"
CONFIG="$FIRST"
[[ -z "$HOSTFILE" ]] || die "unexpected argument '$HOSTFILE' (expected DEVICE_ID, key=value or --flag)"
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
check_device_target
prepare_training_run 'rank_*'
LOG="$LOG_DIR/rank_0.log"
case "$DEVICE_TARGET" in
  GPU) export CUDA_VISIBLE_DEVICES="${NUM:-${CUDA_VISIBLE_DEVICES:-0}}" ;;
  Ascend) export DEVICE_ID="${NUM:-${DEVICE_ID:-0}}" ;;
esac
# A stray dynamic-cluster environment would make train.py wait for a scheduler.
unset MS_ROLE MS_WORKER_NUM MS_SCHED_HOST MS_SCHED_PORT MS_NODE_ID

echo "[launch] 1 process on $DEVICE_TARGET${NUM:+ (device $NUM)}; log: $LOG"
"$PYTHON" "$ENTRY" --config "$CONFIG" "${OVR[@]}" "${FLAGS[@]}" 2>&1 | tee "$LOG"
RC=${PIPESTATUS[0]}
[[ $RC -eq 0 ]] || echo "[launch] FAILED (exit status $RC); log: $LOG" >&2
exit "$RC"
