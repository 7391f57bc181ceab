#!/usr/bin/env bash
# Data-parallel training on Ascend (or any device) launched by msrun, MindSpore's own launcher
# for the dynamic cluster (it starts the scheduler and the workers itself).
#
# Usage: bash scripts/run_distribute_ascend.sh CONFIG [NUM_DEVICES] [key=value ...] [options] [-- ARGS]
#   NUM_DEVICES      ranks on this machine, a whole number right after CONFIG (default 8)
#   key=value        config overrides, passed to train.py
#   --resume, --resume-from CKPT   passed to train.py
#   --dry-run        print the msrun command instead of running it
#   -- ARGS          everything after '--' goes to the entry as it is
# Environment:
#   DEVICE_TARGET=Ascend  (GPU / CPU work too)
#   PYTHON, ENTRY=train.py
#   MASTER_PORT           scheduler port (default: a free port)
#   CLUSTER_TIMEOUT=600   seconds the ranks wait for each other
#   MSRUN_ARGS            extra msrun arguments (several machines: --worker_num, --local_worker_num,
#                         --master_addr, --node_rank; see docs/launch.md)
# Logs: OUTPUT_DIR/logs/worker_K.log per rank (msrun's names) and scheduler.log.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
source "$ROOT/scripts/_cluster.sh"

FIRST_NAME=CONFIG SECOND_NAME=NUM_DEVICES ENTRY_NAME="$(basename "${ENTRY:-train.py}")"
OPTS=(dry-run hostfile=FILE)
FWD_OPTS=(resume resume-from=CKPT)
hint_positional() { [[ -f "$1" ]] && echo "msrun takes no hostfile: pass msrun's own options in MSRUN_ARGS"; }
parse_launch_args "$@"
[[ -z "${OPT[hostfile]:-}" ]] || die "--hostfile: msrun takes no hostfile; run this script on every machine with msrun's own options in MSRUN_ARGS (docs/launch.md)"
CONFIG="$FIRST"
DEVICE_TARGET="${DEVICE_TARGET:-Ascend}"
check_device_target
NUM="${SECOND:-8}"
prepare_training_run 'worker_*' 'rank_*' 'scheduler.*'
msrun_job "$NUM" "$LOG_DIR" "${ENTRY_CMD[@]}"
