# Starting N ranks of one command as a MindSpore dynamic cluster, shared by the training and
# evaluation launchers (sourced after _common.sh, not run). See docs/launch.md.
#
#   mpirun_job NUM HOSTFILE LOG_DIR CMD...   mpirun starts the ranks, we start the scheduler
#   msrun_job NUM LOG_DIR CMD...             msrun starts both (MindSpore's own launcher)
#
# Both exit the calling script: 0 when every rank finished, else non-zero after naming the rank
# that failed and showing the end of its log. With OPT[dry-run] set they print the environment
# and the commands instead of running them.

# On CPU, MindSpore's own collectives give up after MS_CPU_COMM_OP_TIMEOUT seconds (default 30).
# Ranks wait that long in the next all-reduce whenever rank 0 alone evaluates or writes a
# checkpoint: at 100k classes (2 GB checkpoints) a 2-rank CPU run failed there (benchmarks/
# scale.py, docs/launch.md). They wait as long as they may wait for each other to join instead.
cpu_collective_timeout() {
  [[ "$DEVICE_TARGET" == CPU ]] && export MS_CPU_COMM_OP_TIMEOUT="${MS_CPU_COMM_OP_TIMEOUT:-${CLUSTER_TIMEOUT:-600}}"
  return 0
}

mpirun_job() {
  local num="$1" hostfile="$2"; LOG_DIR="$3"; shift 3
  [[ "$num" -ge 1 ]] || die "the number of ranks must be at least 1, got '$num'"
  [[ -z "$hostfile" || -f "$hostfile" ]] || die "hostfile not found: $hostfile"
  local dry="${OPT[dry-run]:-}"
  [[ -n "$dry" ]] || command -v mpirun >/dev/null 2>&1 \
    || die "mpirun not found: install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin)"

  local default_host=127.0.0.1
  [[ -n "$hostfile" ]] && default_host="$(hostname -I 2>/dev/null | awk '{print $1}')"
  export MS_WORKER_NUM="$num"
  export MS_SCHED_HOST="${MS_SCHED_HOST:-${default_host:-127.0.0.1}}"
  export MS_SCHED_PORT="${MS_SCHED_PORT:-$(free_port)}"
  export MS_TOPO_TIMEOUT="${CLUSTER_TIMEOUT:-600}"
  cpu_collective_timeout

  local mpi_opts=(-n "$num") v
  [[ "$(id -u)" == 0 ]] && mpi_opts+=(--allow-run-as-root)
  if [[ -n "$hostfile" ]]; then mpi_opts+=(--hostfile "$hostfile"); else mpi_opts+=(--oversubscribe); fi
  # Each rank runs many threads (MindSpore's kernels, the data workers): do not pin it to one core.
  [[ "${MPIRUN_ARGS:-}" == *--bind-to* ]] || mpi_opts+=(--bind-to none)
  for v in MS_WORKER_NUM MS_SCHED_HOST MS_SCHED_PORT MS_TOPO_TIMEOUT MS_CPU_COMM_OP_TIMEOUT PYTHONPATH \
           PATH LD_LIBRARY_PATH; do
    [[ -n "${!v:-}" ]] && mpi_opts+=(-x "$v")
  done
  # shellcheck disable=SC2206
  local extra=(${MPIRUN_ARGS:-})
  local sched_cmd=("$PYTHON" -m ebv_ms.engine.distributed scheduler --device "$DEVICE_TARGET")
  local mpi_cmd=(mpirun "${mpi_opts[@]}" "${extra[@]}" bash "$ROOT/scripts/mpirun_rank.sh" "$LOG_DIR" "$@")

  if [[ -n "$dry" ]]; then
    echo "[dry-run] $num ranks on $DEVICE_TARGET, scheduler $MS_SCHED_HOST:$MS_SCHED_PORT, logs in $LOG_DIR"
    echo "[dry-run] environment: MS_WORKER_NUM=$MS_WORKER_NUM MS_SCHED_HOST=$MS_SCHED_HOST" \
         "MS_SCHED_PORT=$MS_SCHED_PORT MS_TOPO_TIMEOUT=$MS_TOPO_TIMEOUT" \
         "${MS_CPU_COMM_OP_TIMEOUT:+MS_CPU_COMM_OP_TIMEOUT=$MS_CPU_COMM_OP_TIMEOUT }; each rank: MS_ROLE=MS_WORKER" \
         "MS_NODE_ID=RANK_ID=<rank> DEVICE_ID=<local rank> (scripts/mpirun_rank.sh)"
    print_command scheduler env MS_ROLE=MS_SCHED "${sched_cmd[@]}"
    print_command mpirun "${mpi_cmd[@]}"
    print_command rank "$@"
    exit 0
  fi

  echo "[launch] $num ranks on $DEVICE_TARGET, scheduler $MS_SCHED_HOST:$MS_SCHED_PORT, logs in $LOG_DIR"
  # The scheduler: serves the cluster (rank discovery), runs no job; exits when workers leave.
  # Its exit status goes to scheduler.exit so the watcher below can tell a crash from a normal end.
  rm -f "$LOG_DIR/scheduler.pid" "$LOG_DIR/scheduler.exit"
  ( MS_ROLE=MS_SCHED "${sched_cmd[@]}" > "$LOG_DIR/scheduler.log" 2>&1 &
    echo $! > "$LOG_DIR/scheduler.pid"
    wait $!
    echo $? > "$LOG_DIR/scheduler.exit" ) &
  for _ in $(seq 1 50); do [[ -s "$LOG_DIR/scheduler.pid" ]] && break; sleep 0.1; done
  SCHED_PID="$(cat "$LOG_DIR/scheduler.pid")"
  MPI_PID=""
  WATCH_PID=""
  _cluster_cleanup() {
    [[ -n "$MPI_PID" ]] && kill -TERM "$MPI_PID" 2>/dev/null
    kill -TERM "$SCHED_PID" 2>/dev/null
    [[ -n "$WATCH_PID" ]] && kill "$WATCH_PID" 2>/dev/null
  }
  trap _cluster_cleanup EXIT
  trap 'echo "[launch] interrupted" >&2; exit 130' INT TERM

  "${mpi_cmd[@]}" &
  MPI_PID=$!
  # If the scheduler fails (e.g. its port is taken), the ranks would wait for it until the
  # cluster timeout: stop mpirun at once instead.
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
  local rc=$?
  MPI_PID=""
  if [[ $rc -eq 0 ]]; then
    # Workers are done; the scheduler leaves once they have unregistered.
    for _ in $(seq 1 30); do [[ -s "$LOG_DIR/scheduler.exit" ]] && break; sleep 1; done
    echo "[launch] done: $num ranks finished; logs in $LOG_DIR"
    exit 0
  fi
  echo "[launch] FAILED (mpirun exit status $rc)" >&2
  local found=0 f st r
  for f in $(ls -tr "$LOG_DIR"/rank_*.exit 2>/dev/null); do
    st="$(cat "$f")"
    if [[ "$st" != 0 && "$st" != killed ]]; then
      r="$(basename "$f" .exit)"; r="${r#rank_}"
      echo "[launch] rank $r failed with exit status $st; its log: $LOG_DIR/rank_$r.log" >&2
      echo "---- last lines of $LOG_DIR/rank_$r.log ----" >&2
      grep -v '^\[WARNING\]\|^\[INFO\]' "$LOG_DIR/rank_$r.log" | tail -n 15 >&2
      echo "----" >&2
      found=1
    fi
  done
  if [[ $found == 0 ]]; then
    echo "[launch] no rank reported an error status; see the rank logs: $LOG_DIR/rank_*.log" \
         "and the scheduler log: $LOG_DIR/scheduler.log" >&2
  fi
  exit "$([[ $rc -gt 0 ]] && echo "$rc" || echo 1)"
}

msrun_job() {
  local num="$1"; LOG_DIR="$2"; shift 2
  [[ "$num" -ge 1 ]] || die "the number of ranks must be at least 1, got '$num'"
  # msrun starts the ranks with the `python` found on PATH: make it ours (a venv's bin/ has one).
  [[ "$PYTHON" == */* ]] && export PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"
  local msrun="$(dirname "$PYTHON")/msrun"
  [[ -x "$msrun" ]] || msrun="$(command -v msrun || true)"
  [[ -n "$msrun" || -n "${OPT[dry-run]:-}" ]] || die "msrun not found (it comes with MindSpore >= 2.3)"
  local port="${MASTER_PORT:-$(free_port)}"
  cpu_collective_timeout
  # shellcheck disable=SC2206
  local extra=(${MSRUN_ARGS:-})
  # msrun runs `python SCRIPT ARGS`: the command given here starts with the interpreter.
  [[ "$1" == "$PYTHON" ]] && shift
  local cmd=("${msrun:-msrun}" --worker_num="$num" --local_worker_num="$num" --master_port="$port"
             --log_dir="$LOG_DIR" --join=True --cluster_time_out="${CLUSTER_TIMEOUT:-600}"
             --tail_worker_log=0 "${extra[@]}" "$@")
  if [[ -n "${OPT[dry-run]:-}" ]]; then
    echo "[dry-run] msrun: $num ranks on $DEVICE_TARGET, port $port, logs in $LOG_DIR"
    print_command msrun "${cmd[@]}"
    exit 0
  fi
  echo "[launch] msrun: $num ranks on $DEVICE_TARGET, port $port, logs in $LOG_DIR"
  "${cmd[@]}"
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "[launch] FAILED (msrun exit status $rc)" >&2
    local f
    for f in "$LOG_DIR"/worker_*.log; do
      if grep -q "Traceback\|Error" "$f" 2>/dev/null; then
        echo "[launch] error in $f:" >&2
        grep -v '^\[WARNING\]\|^\[INFO\]' "$f" | tail -n 15 >&2
      fi
    done
    exit "$rc"
  fi
  echo "[launch] done; logs in $LOG_DIR"
  exit 0
}
