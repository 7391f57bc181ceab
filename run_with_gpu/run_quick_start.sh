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
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/_common.sh"
FIRST_NAME=CONFIG FIRST_OPTIONAL=1 ALLOW_PASS=0 ENTRY_NAME=train.py
parse_launch_args "$@"
DEMO_CONFIG="configs/demo_cpu.yaml"
CONFIG="${FIRST:-$DEMO_CONFIG}"
cd "$ROOT"
[[ -f "$CONFIG" ]] || die "config not found: $CONFIG"
T0=$(date +%s)

if [[ -n "${EBV_PYTHON:-}" ]]; then
  PY="$EBV_PYTHON"
  echo "quick start: using $PY (EBV_PYTHON set; scripts/setup_env.sh skipped)"
else
  bash "$ROOT/scripts/setup_env.sh"
  PY="${EBV_VENV:-$ROOT/.venv}/bin/python"
fi

# ---- 0. which device: a GPU that nvidia-smi lists AND MindSpore can compute on
DEVICE=CPU
if [[ "${EBV_FORCE_CPU:-0}" != 1 ]] && command -v nvidia-smi >/dev/null 2>&1 \
    && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
  GPU_NAME="$(nvidia-smi -L | head -n1)"
  if timeout 600 "$PY" - >/dev/null 2>&1 <<'PYEOF'
import numpy as np
import mindspore as ms
ms.set_device("GPU")
x = ms.Tensor(np.ones(4, np.float32))
assert float((x + x).sum().asnumpy()) == 8.0
PYEOF
  then
    DEVICE=GPU
    echo "quick start: GPU found ($GPU_NAME); running on GPU with $CONFIG"
  else
    echo "quick start: nvidia-smi lists a GPU ($GPU_NAME) but MindSpore cannot run on it"
    echo "             (CPU-only MindSpore build or CUDA mismatch); falling back to CPU"
  fi
fi
if [[ "$DEVICE" == CPU ]]; then
  if [[ "$CONFIG" != "$DEMO_CONFIG" ]]; then
    echo "quick start: no usable GPU: running $CONFIG on CPU (device_target=CPU) - this may be slow"
  else
    echo "quick start: no usable GPU found: running the same flow on CPU with the demo config ($CONFIG)"
  fi
fi
OVERRIDES+=("device_target=$DEVICE")

# ---- 1. data: the demo archive is written on first use
INFO="$("$PY" - "$CONFIG" "${OVERRIDES[@]}" <<'PYEOF'
import sys
from ebv_ms.config import ConfigError, load_config
try:
    cfg = load_config(sys.argv[1], sys.argv[2:])
except ConfigError as exc:
    print(f"quick start: config error: {exc}", file=sys.stderr)
    sys.exit(2)
print(cfg.output_dir, cfg.data.get("path") or "-")
PYEOF
)" || exit 2
read -r OUT DATA_PATH <<< "$INFO"
if [[ ! -e "$DATA_PATH" ]]; then
  if [[ "$(basename "$DATA_PATH")" == digits.zip ]]; then
    echo "quick start: [1/4] writing the demo images to $(dirname "$DATA_PATH")/"
    "$PY" -m ebv_ms.tools.make_demo --out "$(dirname "$DATA_PATH")"
  else
    echo "quick start: data.path '$DATA_PATH' not found; set data.path=... to your dataset" >&2
    exit 2
  fi
else
  echo "quick start: [1/4] data: $DATA_PATH"
fi

# ---- 2. EBVs (cached under ebv.cache_dir; skipped when already there or head != ebv)
echo "quick start: [2/4] EBV set"
"$PY" -m ebv_ms.engine.ebv_source --config "$CONFIG" "${OVERRIDES[@]}"

# ---- 3. train (continues an interrupted run; does nothing if it already finished)
echo "quick start: [3/4] training -> $OUT"
"$PY" train.py --config "$CONFIG" --resume "${OVERRIDES[@]}"

# ---- 4. evaluate the best checkpoint from the checkpoint alone
CKPT="$OUT/best.ckpt"
[[ -f "$CKPT" ]] || CKPT="$OUT/last.ckpt"
echo "quick start: [4/4] evaluating $CKPT"
"$PY" eval.py --ckpt "$CKPT" --json "$OUT/eval.json" "device_target=$DEVICE"

echo "quick start: done on $DEVICE in $(( $(date +%s) - T0 )) s; logs, checkpoints and eval.json in $OUT"
