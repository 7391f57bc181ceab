#!/usr/bin/env bash
# One mpirun rank as a MindSpore dynamic-cluster worker (started by mpirun_job in _cluster.sh, for
# run_distribute_gpu.sh and run_eval_gpu.sh --ranks N).
# Usage (by mpirun): mpirun_rank.sh LOG_DIR COMMAND [ARGS...]
# Maps OMPI_COMM_WORLD_RANK -> MS_NODE_ID / RANK_ID and the node-local rank -> DEVICE_ID, writes
# this rank's stdout+stderr to LOG_DIR/rank_K.log (rank 0 also echoes it to the console) and its
# exit status to LOG_DIR/rank_K.exit, so the launcher can name the rank that failed.
set -u
LOG_DIR="$1"; shift
RANK="${OMPI_COMM_WORLD_RANK:?not started by mpirun (OMPI_COMM_WORLD_RANK unset)}"
LOCAL_RANK="${OMPI_COMM_WORLD_LOCAL_RANK:-$RANK}"
export MS_ROLE=MS_WORKER MS_NODE_ID="$RANK" RANK_ID="$RANK" DEVICE_ID="$LOCAL_RANK"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/rank_${RANK}.log"
EXIT_FILE="$LOG_DIR/rank_${RANK}.exit"
rm -f "$EXIT_FILE"
echo "[mpirun_rank] rank $RANK (local $LOCAL_RANK) on $(hostname): $*" > "$LOG"

# The training process runs without Open MPI's own variables: MindSpore would otherwise see a
# job "using both dynamic cluster and OpenMPI" and its ranks register with the scheduler far more
# slowly (measured: 10-45 s instead of ~0-10 s for 2 ranks on CPU).
UNSET=()
for v in $(compgen -e); do [[ "$v" == OMPI_* || "$v" == PMIX_* ]] && UNSET+=(-u "$v"); done
env "${UNSET[@]}" "$@" >> "$LOG" 2>&1 &
CHILD=$!
TAIL=""
if [[ "$RANK" == 0 ]]; then
  tail -n +1 -f --pid="$CHILD" "$LOG" &
  TAIL=$!
fi
# mpirun stops the other ranks with SIGTERM when one fails: pass it on to the training process
# so no orphan keeps waiting in a collective.
on_signal() {
  kill -TERM "$CHILD" 2>/dev/null
  sleep 2
  kill -KILL "$CHILD" 2>/dev/null
  echo "killed" > "$EXIT_FILE"
  exit 143
}
trap on_signal TERM INT HUP
wait "$CHILD"
RC=$?
[[ -n "$TAIL" ]] && wait "$TAIL" 2>/dev/null
echo "$RC" > "$EXIT_FILE"
exit "$RC"
