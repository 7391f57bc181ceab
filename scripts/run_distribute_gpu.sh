#!/usr/bin/env bash
# Data-parallel training launched by mpirun (MindSpore dynamic cluster: one scheduler + N workers).
#
# Usage: bash scripts/run_distribute_gpu.sh CONFIG [NUM_DEVICES] [key=value ...] [options] [-- ARGS]
#   CONFIG           the YAML config (e.g. configs/10w_classes.yaml)
#   NUM_DEVICES      number of ranks, a whole number right after CONFIG (default: the GPUs
#                    nvidia-smi lists, else 8)
#   key=value        config overrides, passed to train.py
#   --hostfile FILE  an Open MPI hostfile for several machines (default: this machine only)
#   --resume         continue the run in output_dir (passed to train.py)
#   --resume-from CKPT  continue from that checkpoint (passed to train.py)
#   --dry-run        print the scheduler, mpirun and rank commands instead of running them
#   -- ARGS          everything after '--' goes to the entry as it is (e.g. an ENTRY's own flags)
# Examples:
#   bash scripts/run_distribute_gpu.sh configs/10w_classes.yaml 8 data.path=/data/10w_classes.zip
#   bash scripts/run_distribute_gpu.sh configs/10w_classes.yaml 16 --hostfile hosts --resume
#   DEVICE_TARGET=CPU bash scripts/run_distribute_gpu.sh configs/demo_cpu.yaml 2
# Environment:
#   DEVICE_TARGET=GPU     set CPU to run the same launch on CPU (this is how it is tested)
#   PYTHON                interpreter (default: .venv/bin/python, else python3)
#   ENTRY=train.py        the training script (any script that calls init_distributed)
#   MS_SCHED_HOST         scheduler address (default 127.0.0.1, or this host's IP with --hostfile)
#   MS_SCHED_PORT         scheduler port (default: a free port)
#   CLUSTER_TIMEOUT=600   seconds the ranks wait for each other to join (MS_TOPO_TIMEOUT)
#   MPIRUN_ARGS           extra mpirun arguments
# Logs: OUTPUT_DIR/logs/rank_K.log per rank (rank 0 is also echoed here), scheduler.log.
# A failed rank stops the job: mpirun stops the others, the scheduler is stopped, and the script
# prints the failing rank's log path and exits non-zero.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
source "$ROOT/scripts/_cluster.sh"

FIRST_NAME=CONFIG SECOND_NAME=NUM_DEVICES ENTRY_NAME="$(basename "${ENTRY:-train.py}")"
OPTS=(hostfile=FILE dry-run)
FWD_OPTS=(resume resume-from=CKPT)
hint_positional() { [[ -f "$1" ]] && echo "a hostfile is given as --hostfile $1"; }
parse_launch_args "$@"
CONFIG="$FIRST"
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
check_device_target
NUM="$SECOND"
if [[ -z "$NUM" ]]; then
  NUM=8
  if [[ "$DEVICE_TARGET" == GPU ]] && command -v nvidia-smi >/dev/null 2>&1; then
    NUM="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"; [[ "$NUM" -gt 0 ]] || NUM=8
  fi
fi
[[ "$NUM" -ge 1 ]] || die "NUM_DEVICES must be at least 1, got '$NUM'"
prepare_training_run 'rank_*' 'scheduler.*'
mpirun_job "$NUM" "${OPT[hostfile]:-}" "$LOG_DIR" "${ENTRY_CMD[@]}"
