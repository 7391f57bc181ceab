#!/usr/bin/env bash
# Data-parallel training on Ascend (or any device) launched by msrun, MindSpore's own launcher
# for the dynamic cluster (it starts the scheduler and the workers itself).
#
# Usage: bash scripts/run_distribute_ascend.sh CONFIG [NUM_DEVICES] [key=value ...] [options] [-- ARGS]
#   NUM_DEVICES      ranks on this machine, a whole number right after CONFIG (default 8)
#   key=value        config overrides, passed to train.py
#   --resume, --resume-from CKPT   passed to train.py
#   --nodes M --node-rank K --master-addr HOST [--master-port PORT]
#                    several machines: run the script on each, the same M, HOST and PORT
#                    (default 8118), K = 0..M-1; HOST is node 0's address (it runs the scheduler)
#   --dry-run        print the msrun command instead of running it
#   -- ARGS          everything after '--' goes to the entry as it is
# Environment:
#   DEVICE_TARGET=Ascend  (GPU / CPU work too)
#   PYTHON, ENTRY=train.py
#   MASTER_PORT           scheduler port (default: a free port; 8118 with --nodes)
#   CLUSTER_TIMEOUT=600   seconds the ranks wait for each other
#   MSRUN_ARGS            extra msrun arguments
# Logs: OUTPUT_DIR/logs/worker_K.log per rank (msrun's names), scheduler.log, msrun.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${PYTHON:-}" ]] || { PYTHON="$ROOT/.venv/bin/python"; [[ -x "$PYTHON" ]] || PYTHON=python3; }
export PYTHON PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m ebv_ms.tools.launch msrun "$0" "$@"   # the logic: ebv_ms/tools/launch.py
