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
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${PYTHON:-}" ]] || { PYTHON="$ROOT/.venv/bin/python"; [[ -x "$PYTHON" ]] || PYTHON=python3; }
export PYTHON PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m ebv_ms.tools.launch standalone "$0" "$@"   # the logic: ebv_ms/tools/launch.py
