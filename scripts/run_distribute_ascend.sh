#!/usr/bin/env bash
# Data-parallel training on Ascend (or any device) launched by msrun, MindSpore's own launcher
# for the dynamic cluster (it starts the scheduler and the workers itself).
#
# Usage: bash scripts/run_distribute_ascend.sh CONFIG [NUM_DEVICES] [key=value ...] [--resume]
#   NUM_DEVICES  ranks on this machine (default 8)
# Environment:
#   DEVICE_TARGET=Ascend  (GPU / CPU work too)
#   PYTHON, ENTRY=train.py
#   MASTER_PORT           scheduler port (default: a free port)
#   CLUSTER_TIMEOUT=600   seconds the ranks wait for each other
#   MSRUN_ARGS            extra msrun arguments (several machines: --worker_num, --local_worker_num,
#                         --master_addr, --node_rank; see docs/launch.md)
# Logs: OUTPUT_DIR/logs/worker_K.log per rank (msrun's names) and scheduler.log; rank 0 is echoed.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

take_launch_args 15 "config file" "$@"
CONFIG="$FIRST"
[[ -z "$HOSTFILE" ]] || die "unexpected argument '$HOSTFILE' (msrun takes no hostfile; use MSRUN_ARGS)"
NUM="${NUM:-8}"
DEVICE_TARGET="${DEVICE_TARGET:-Ascend}"
check_device_target
# msrun starts the ranks with the `python` found on PATH: make it ours (a venv's bin/ has one).
[[ "$PYTHON" == */* ]] && export PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"
MSRUN="$(dirname "$PYTHON")/msrun"
[[ -x "$MSRUN" ]] || MSRUN="$(command -v msrun || true)"
[[ -n "$MSRUN" ]] || die "msrun not found (it comes with MindSpore >= 2.3)"
prepare_training_run 'worker_*' 'rank_*' 'scheduler.*'
PORT="${MASTER_PORT:-$(free_port)}"
# shellcheck disable=SC2206
EXTRA=(${MSRUN_ARGS:-})

echo "[launch] msrun: $NUM ranks on $DEVICE_TARGET, port $PORT, logs in $LOG_DIR"
"$MSRUN" --worker_num="$NUM" --local_worker_num="$NUM" --master_port="$PORT" \
  --log_dir="$LOG_DIR" --join=True --cluster_time_out="${CLUSTER_TIMEOUT:-600}" \
  --tail_worker_log=0 "${EXTRA[@]}" \
  "$ENTRY" --config "$CONFIG" "${OVR[@]}" "${FLAGS[@]}"
RC=$?
if [[ $RC -ne 0 ]]; then
  echo "[launch] FAILED (msrun exit status $RC)" >&2
  for f in "$LOG_DIR"/worker_*.log; do
    if grep -q "Traceback\|Error" "$f" 2>/dev/null; then
      echo "[launch] error in $f:" >&2
      grep -v '^\[WARNING\]\|^\[INFO\]' "$f" | tail -n 15 >&2
    fi
  done
  exit "$RC"
fi
echo "[launch] done; logs in $LOG_DIR"
