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
#   --ranks N          N ranks through the same launch as training: mpirun (as run_distribute_gpu.sh),
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
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${PYTHON:-}" ]] || { PYTHON="$ROOT/.venv/bin/python"; [[ -x "$PYTHON" ]] || PYTHON=python3; }
export PYTHON PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m ebv_ms.tools.launch eval "$0" "$@"   # the logic: ebv_ms/tools/launch.py
