#!/usr/bin/env bash
# Data-parallel training launched by mpirun (MindSpore dynamic cluster: one scheduler + N workers).
#
# Usage: bash scripts/run_distribute_gpu.sh CONFIG [NUM_DEVICES] [HOSTFILE] [key=value ...]
#   NUM_DEVICES  number of ranks (default: GPUs seen by nvidia-smi, else 8)
#   HOSTFILE     an Open MPI hostfile for several machines (default: this machine only)
#   key=value    config overrides passed to train.py
#   --flag[=v]   passed to train.py as is (e.g. --resume)
# Environment:
#   DEVICE_TARGET=GPU     set CPU to run the same launch on CPU (this is how it is tested)
#   PYTHON                interpreter (default: .venv/bin/python, else python3)
#   ENTRY=train.py        the training script (any script that calls init_distributed)
#   MS_SCHED_HOST         scheduler address (default 127.0.0.1, or this host's IP with HOSTFILE)
#   MS_SCHED_PORT         scheduler port (default: a free port)
#   CLUSTER_TIMEOUT=600   seconds the ranks wait for each other to join (MS_TOPO_TIMEOUT)
#   MPIRUN_ARGS           extra mpirun arguments
# Logs: OUTPUT_DIR/logs/rank_K.log per rank (rank 0 is also echoed here), scheduler.log.
# A failed rank stops the job: mpirun stops the others, the scheduler is stopped, and the script
# prints the failing rank's log path and exits non-zero.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

take_launch_args 20 "config file" "$@"
CONFIG="$FIRST"
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
check_device_target
if [[ -z "$NUM" ]]; then
  NUM=8
  if [[ "$DEVICE_TARGET" == GPU ]] && command -v nvidia-smi >/dev/null 2>&1; then
    NUM="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"; [[ "$NUM" -gt 0 ]] || NUM=8
  fi
fi
[[ "$NUM" -ge 1 ]] || die "NUM_DEVICES must be at least 1, got '$NUM'"
[[ -z "$HOSTFILE" || -f "$HOSTFILE" ]] || die "hostfile not found: $HOSTFILE"
command -v mpirun >/dev/null 2>&1 || die "mpirun not found: install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin)"
prepare_training_run 'rank_*' 'scheduler.*'

if [[ -n "$HOSTFILE" ]]; then
  DEFAULT_HOST="$(hostname -I 2>/dev/null | awk '{print $1}')"
else
  DEFAULT_HOST=127.0.0.1
fi
export MS_WORKER_NUM="$NUM"
export MS_SCHED_HOST="${MS_SCHED_HOST:-${DEFAULT_HOST:-127.0.0.1}}"
export MS_SCHED_PORT="${MS_SCHED_PORT:-$(free_port)}"
export MS_TOPO_TIMEOUT="${CLUSTER_TIMEOUT:-600}"

echo "[launch] $NUM ranks on $DEVICE_TARGET, scheduler $MS_SCHED_HOST:$MS_SCHED_PORT, logs in $LOG_DIR"

# The scheduler: serves the cluster (rank discovery), does no training; exits when workers leave.
# Its exit status goes to scheduler.exit so the watcher below can tell a crash from a normal end.
( MS_ROLE=MS_SCHED "$PYTHON" -m ebv_ms.engine.distributed scheduler --device "$DEVICE_TARGET" \
    > "$LOG_DIR/scheduler.log" 2>&1 &
  echo $! > "$LOG_DIR/scheduler.pid"
  wait $!
  echo $? > "$LOG_DIR/scheduler.exit" ) &
for _ in $(seq 1 50); do [[ -s "$LOG_DIR/scheduler.pid" ]] && break; sleep 0.1; done
SCHED_PID="$(cat "$LOG_DIR/scheduler.pid")"
MPI_PID=""
cleanup() {
  [[ -n "$MPI_PID" ]] && kill -TERM "$MPI_PID" 2>/dev/null
  kill -TERM "$SCHED_PID" 2>/dev/null
  [[ -n "${WATCH_PID:-}" ]] && kill "$WATCH_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'echo "[launch] interrupted" >&2; exit 130' INT TERM

MPI_OPTS=(-n "$NUM")
[[ "$(id -u)" == 0 ]] && MPI_OPTS+=(--allow-run-as-root)
if [[ -n "$HOSTFILE" ]]; then MPI_OPTS+=(--hostfile "$HOSTFILE"); else MPI_OPTS+=(--oversubscribe); fi
# Each rank runs many threads (MindSpore's kernels, the data workers): do not pin it to one core.
[[ "${MPIRUN_ARGS:-}" == *--bind-to* ]] || MPI_OPTS+=(--bind-to none)
for v in MS_WORKER_NUM MS_SCHED_HOST MS_SCHED_PORT MS_TOPO_TIMEOUT PYTHONPATH PATH LD_LIBRARY_PATH; do
  [[ -n "${!v:-}" ]] && MPI_OPTS+=(-x "$v")
done
# shellcheck disable=SC2206
EXTRA=(${MPIRUN_ARGS:-})

mpirun "${MPI_OPTS[@]}" "${EXTRA[@]}" bash "$ROOT/scripts/mpirun_rank.sh" "$LOG_DIR" \
  "$PYTHON" "$ENTRY" --config "$CONFIG" "${OVR[@]}" "${FLAGS[@]}" &
MPI_PID=$!

# If the scheduler fails (e.g. its port is taken), the ranks would wait for it until the cluster
# timeout: stop mpirun at once instead.
( while kill -0 "$MPI_PID" 2>/dev/null; do
    if [[ -s "$LOG_DIR/scheduler.exit" ]]; then
      if [[ "$(cat "$LOG_DIR/scheduler.exit")" != 0 ]]; then
        echo "[launch] the scheduler failed (see $LOG_DIR/scheduler.log); stopping the ranks" >&2
        kill -TERM "$MPI_PID" 2>/dev/null
      fi
      exit 0
    fi
    sleep 1
  done ) &
WATCH_PID=$!

wait "$MPI_PID"
RC=$?
MPI_PID=""
kill "$WATCH_PID" 2>/dev/null
if [[ $RC -eq 0 ]]; then
  # Workers are done; the scheduler leaves once they have unregistered.
  for _ in $(seq 1 30); do [[ -s "$LOG_DIR/scheduler.exit" ]] && break; sleep 1; done
  echo "[launch] done: $NUM ranks finished; logs in $LOG_DIR"
  exit 0
fi

echo "[launch] FAILED (mpirun exit status $RC)" >&2
FOUND=0
for f in $(ls -tr "$LOG_DIR"/rank_*.exit 2>/dev/null); do
  st="$(cat "$f")"
  if [[ "$st" != 0 && "$st" != killed ]]; then
    r="$(basename "$f" .exit)"; r="${r#rank_}"
    echo "[launch] rank $r failed with exit status $st; its log: $LOG_DIR/rank_$r.log" >&2
    echo "---- last lines of $LOG_DIR/rank_$r.log ----" >&2
    grep -v '^\[WARNING\]\|^\[INFO\]' "$LOG_DIR/rank_$r.log" | tail -n 15 >&2
    echo "----" >&2
    FOUND=1
  fi
done
if [[ $FOUND == 0 ]]; then
  echo "[launch] no rank reported an error status; see the rank logs: $LOG_DIR/rank_*.log" \
       "and the scheduler log: $LOG_DIR/scheduler.log" >&2
fi
exit "$([[ $RC -gt 0 ]] && echo "$RC" || echo 1)"
