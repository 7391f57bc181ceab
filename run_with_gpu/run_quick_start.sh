#!/usr/bin/env bash
# Single-GPU quick start (the authors' Run_with_GPU flow): make the EBV set if it is not cached
# yet, train, then evaluate the best checkpoint. Without a usable GPU the same flow runs on CPU
# with the demo config (configs/demo_cpu.yaml: real digit images, a small CNN, about a minute)
# and says so. Running it again continues an interrupted run (train.py --resume).
#
# Usage: bash run_with_gpu/run_quick_start.sh [CONFIG] [key.sub=value ...]
#   CONFIG  defaults to configs/demo_cpu.yaml; on a GPU it runs there with device_target=GPU
#           (mixed precision O2). For ImageNet pass e.g. configs/<imagenet config> data.path=...
#   key.sub=value  config overrides for every step
# Environment:
#   EBV_PYTHON=/path/to/python   use this interpreter and skip scripts/setup_env.sh
#   EBV_FORCE_CPU=1              ignore any GPU
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${EBV_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  # the environment first (quick when it is there); --help needs none
  [[ " $* " == *" --help "* || " $* " == *" -h "* ]] || bash "$ROOT/scripts/setup_env.sh"
  PYTHON="${EBV_VENV:-$ROOT/.venv}/bin/python"; [[ -x "$PYTHON" ]] || PYTHON=python3
fi
export PYTHON PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m ebv_ms.tools.launch quick-start "$0" "$@"   # the logic: ebv_ms/tools/launch.py
