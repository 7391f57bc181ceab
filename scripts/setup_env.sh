#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install ebv-ms into it.
# Quick when nothing changed: a stamp records the hash of the requirement files.
# Usage: bash scripts/setup_env.sh [--dev]      (--dev adds pytest)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EBV_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
REQ="$ROOT/requirements.txt"
[[ "${1:-}" == "--dev" ]] && REQ="$ROOT/requirements-dev.txt"
STAMP="$VENV/.ebv_ms_stamp_$(basename "$REQ" .txt)"
HASH="$(cat "$ROOT/requirements.txt" "$REQ" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" && -x "$VENV/bin/python" ]]; then
  exit 0
fi
if ! command -v "$PY" >/dev/null; then
  echo "setup_env: '$PY' not found; install Python 3 (tested: 3.11) or set PYTHON=/path/to/python3" >&2
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup_env: creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
echo "setup_env: installing dependencies from $(basename "$REQ") (first run takes a minute or two)"
LOG="$VENV/setup.log"
run_pip() {  # quiet unless it fails; then show pip's own output
  if ! "$VENV/bin/python" -m pip "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "setup_env: 'pip $*' failed (full log: $LOG). Check the network access to PyPI" \
         "and that this Python has mindspore 2.10.0 wheels (tested: 3.11; PYTHON=... picks another)." >&2
    exit 1
  fi
}
: > "$LOG"
run_pip install -q --upgrade pip
run_pip install -q -r "$REQ"
run_pip install -q --no-deps -e "$ROOT"
echo "$HASH" > "$STAMP"
echo "setup_env: ready ($("$VENV/bin/python" -c 'import mindspore; print("mindspore", mindspore.__version__)' 2>/dev/null))"
