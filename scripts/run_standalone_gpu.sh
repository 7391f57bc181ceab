#!/usr/bin/env bash
# Single-device training.
#
# Usage: bash scripts/run_standalone_gpu.sh CONFIG [DEVICE_ID] [key=value ...] [options] [-- ARGS]
#   DEVICE_ID        which card, a whole number right after CONFIG (default 0). On GPU the
#                    process sees only that card (CUDA_VISIBLE_DEVICES) and uses it as device 0.
#   key=value        config overrides, passed to train.py
#   --resume, --resume-from CKPT   passed to train.py
#   --dry-run        print the command and its device environment instead of running it
#   -- ARGS          everything after '--' goes to the entry as it is
# Environment: DEVICE_TARGET=GPU (set CPU to run on CPU), PYTHON, ENTRY=train.py
# Log: OUTPUT_DIR/logs/rank_0.log (stdout + stderr, also shown here); train.py writes its own
# train.log / metrics.jsonl / checkpoints in OUTPUT_DIR.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

FIRST_NAME=CONFIG SECOND_NAME=DEVICE_ID ENTRY_NAME="$(basename "${ENTRY:-train.py}")"
OPTS=(dry-run)
FWD_OPTS=(resume resume-from=CKPT)
parse_launch_args "$@"
CONFIG="$FIRST"
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
check_device_target
prepare_training_run 'rank_*'
select_one_device "$SECOND"
if [[ -n "${OPT[dry-run]:-}" ]]; then
  echo "[dry-run] 1 process on $DEVICE_TARGET; environment: $(device_env_text)"
  print_command run "${ENTRY_CMD[@]}"
  exit 0
fi
LOG="$LOG_DIR/rank_0.log"
echo "[launch] 1 process on $DEVICE_TARGET${SECOND:+ (device $SECOND)}; log: $LOG"
"${ENTRY_CMD[@]}" 2>&1 | tee "$LOG"
RC=${PIPESTATUS[0]}
[[ $RC -eq 0 ]] || echo "[launch] FAILED (exit status $RC); log: $LOG" >&2
exit "$RC"
