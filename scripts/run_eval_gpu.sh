#!/usr/bin/env bash
# Evaluate a checkpoint (top-1 / top-5, parameter counts, images/s), on one device or on N ranks.
#
# Usage: bash scripts/run_eval_gpu.sh CKPT [key=value ...] [options] [-- ARGS]
#   CKPT               best.ckpt / last.ckpt written by train.py (it records its config and EBV set)
#   key=value          config overrides, passed to eval.py
# eval.py's own options, passed to it as they are (see python eval.py --help):
#   --config FILE      YAML applied on top of the checkpoint's config
#   --test-size S      evaluation input side (e.g. 256)
#   --batch-size B, --split S, --json PATH, --no-progress
# Where it runs:
#   --device-id N      one process on card N (default 0); on GPU it sees only that card
#   --ranks N          N ranks through the same launch as training: mpirun (scripts/_cluster.sh),
#                      msrun on Ascend; each rank uses its local card
#   --hostfile FILE    with --ranks: an Open MPI hostfile for several machines
#   --launcher L       with --ranks: mpirun or msrun (default mpirun; msrun on Ascend)
#   --log-dir DIR      with --ranks: per-rank logs (default: CKPT's folder/logs/eval)
#   --dry-run          print the command(s) and their device environment instead of running them
#   -- ARGS            everything after '--' goes to eval.py as it is
# Examples:
#   bash scripts/run_eval_gpu.sh runs/imagenet_r50_ebv_a1/best.ckpt --test-size 256
#   bash scripts/run_eval_gpu.sh runs/10w_classes/best.ckpt --ranks 8 data.path=/data/10w_classes.zip
# Environment: DEVICE_TARGET=GPU (CPU / Ascend), PYTHON, ENTRY=eval.py, and with --ranks the
# variables of run_distribute_gpu.sh (MS_SCHED_HOST, MS_SCHED_PORT, CLUSTER_TIMEOUT, MPIRUN_ARGS)
# or run_distribute_ascend.sh (MASTER_PORT, MSRUN_ARGS).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
source "$ROOT/scripts/_cluster.sh"

FIRST_NAME=CKPT ENTRY_NAME="$(basename "${ENTRY:-eval.py}")"
OPTS=(device-id=N ranks=N hostfile=FILE launcher=L log-dir=DIR dry-run)
FWD_OPTS=(config=FILE test-size=S batch-size=B split=S json=PATH no-progress)
hint_positional() {
  if [[ "$1" =~ ^[0-9]+$ ]]; then echo "choose the card with --device-id $1, or run $1 ranks with --ranks $1"
  elif [[ "$1" == *.yaml || "$1" == *.yml ]]; then echo "a config is given as --config $1"
  fi
}
parse_launch_args "$@"
CKPT="$FIRST"
[[ -f "$CKPT" ]] || die "checkpoint not found: $CKPT"
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
check_device_target
ENTRY="${ENTRY:-$ROOT/eval.py}"
[[ -f "$ENTRY" ]] || die "evaluation script not found: $ENTRY (ENTRY)"
for k in device-id ranks; do
  [[ -z "${OPT[$k]:-}" || "${OPT[$k]}" =~ ^[0-9]+$ ]] || die "--$k needs a whole number, got '${OPT[$k]}'"
done
ENTRY_CMD=("$PYTHON" "$ENTRY" --ckpt "$CKPT" "device_target=$DEVICE_TARGET" "${OVERRIDES[@]}"
           "${FORWARD[@]}" "${PASS[@]}")

RANKS="${OPT[ranks]:-1}"
[[ "$RANKS" -ge 1 ]] || die "--ranks must be at least 1, got '$RANKS'"
if [[ "$RANKS" -gt 1 || -n "${OPT[hostfile]:-}" ]]; then
  [[ -z "${OPT[device-id]:-}" ]] \
    || die "--device-id is for one process; with --ranks each rank uses its local card (set CUDA_VISIBLE_DEVICES to choose the cards)"
  LAUNCHER="${OPT[launcher]:-$([[ "$DEVICE_TARGET" == Ascend ]] && echo msrun || echo mpirun)}"
  prepare_log_dir "${OPT[log-dir]:-$(dirname "$CKPT")/logs/eval}" 'rank_*' 'worker_*' 'scheduler.*'
  case "$LAUNCHER" in
    mpirun) mpirun_job "$RANKS" "${OPT[hostfile]:-}" "$LOG_DIR" "${ENTRY_CMD[@]}" ;;
    msrun)
      [[ -z "${OPT[hostfile]:-}" ]] || die "--hostfile: msrun takes no hostfile; pass msrun's own options in MSRUN_ARGS"
      msrun_job "$RANKS" "$LOG_DIR" "${ENTRY_CMD[@]}" ;;
    *) die "--launcher must be mpirun or msrun, got '$LAUNCHER'" ;;
  esac
fi
for k in hostfile launcher log-dir; do
  [[ -z "${OPT[$k]:-}" ]] || die "--$k only applies with --ranks N (N > 1)"
done
select_one_device "${OPT[device-id]:-}"
if [[ -n "${OPT[dry-run]:-}" ]]; then
  echo "[dry-run] 1 process on $DEVICE_TARGET; environment: $(device_env_text)"
  print_command run "${ENTRY_CMD[@]}"
  exit 0
fi
exec "${ENTRY_CMD[@]}"
