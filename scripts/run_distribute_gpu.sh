#!/usr/bin/env bash
# Data-parallel training launched by mpirun (MindSpore dynamic cluster: one scheduler + N workers).
#
# Usage: bash scripts/run_distribute_gpu.sh CONFIG [NUM_DEVICES] [key=value ...] [options] [-- ARGS]
#   CONFIG           the YAML config (e.g. configs/10w_classes.yaml)
#   NUM_DEVICES      number of ranks, a whole number right after CONFIG (default: the GPUs
#                    visible here, i.e. nvidia-smi's list narrowed by CUDA_VISIBLE_DEVICES; else 8)
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
# Checked before anything starts (one line 'error:', exit status 2): the arguments, the config
# and data.path, the rank count against the visible GPUs or the hostfile's slots, the device.
# Logs: OUTPUT_DIR/logs/rank_K.log per rank (rank 0 is also echoed here), scheduler.log.
# The first rank that fails stops the job: the others and the scheduler are stopped, and the
# script shows that rank's error and log path and exits non-zero.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${PYTHON:-}" ]] || { PYTHON="$ROOT/.venv/bin/python"; [[ -x "$PYTHON" ]] || PYTHON=python3; }
export PYTHON PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m ebv_ms.tools.launch mpirun "$0" "$@"   # the logic: ebv_ms/tools/launch.py
