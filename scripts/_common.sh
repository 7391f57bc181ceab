# Shared by the launch scripts (sourced, not run). Sets ROOT, PYTHON, PYTHONPATH.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "error: $*" >&2; exit 2; }

check_device_target() {
  case "$DEVICE_TARGET" in
    CPU|GPU|Ascend) ;;
    *) die "DEVICE_TARGET must be CPU, GPU or Ascend, got '$DEVICE_TARGET'" ;;
  esac
}

# Split "CONFIG [N] [HOSTFILE] [key=value ...] [--flag ...]" style arguments: --flags (e.g.
# --resume) -> FLAGS for the training script, words with '=' -> config OVERRIDES, numbers -> NUM,
# anything else -> HOSTFILE (at most one).
parse_launch_args() {
  NUM=""; HOSTFILE=""; OVERRIDES=(); FLAGS=()
  local a
  for a in "$@"; do
    if [[ "$a" == -* ]]; then FLAGS+=("$a")
    elif [[ "$a" == *=* ]]; then OVERRIDES+=("$a")
    elif [[ "$a" =~ ^[0-9]+$ && -z "$NUM" ]]; then NUM="$a"
    elif [[ -z "$HOSTFILE" ]]; then HOSTFILE="$a"
    else die "unexpected argument '$a' (expected NUM_DEVICES, HOSTFILE or key=value)"; fi
  done
}

# Validates CONFIG + overrides (errors name the key) and prints its output_dir.
resolve_output_dir() {
  "$PYTHON" -m ebv_ms.engine.distributed output-dir "$@" || exit 2
}

free_port() {
  "$PYTHON" - <<'PY'
import socket
s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()
PY
}

# A new launch in the same output_dir (e.g. --resume after a crash) keeps the earlier logs:
# they move to LOG_DIR/previous/<time>/ instead of being overwritten.
archive_old_logs() {
  local dir="$1"; shift
  local files=() pat f
  for pat in "$@"; do
    for f in "$dir"/$pat; do [[ -e "$f" ]] && files+=("$f"); done
  done
  [[ ${#files[@]} -gt 0 ]] || return 0
  local dest="$dir/previous/$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$dest" && mv "${files[@]}" "$dest/" && echo "[launch] earlier logs moved to $dest"
}

# take_launch_args USAGE_LINES WHAT "$@": with no argument, print the calling script's usage
# (its header, lines 2..USAGE_LINES) and exit 2; else check that the first argument is an
# existing file (WHAT names it in the error), set FIRST to it, and parse the rest with
# parse_launch_args.
take_launch_args() {
  local lines="$1" what="$2"; shift 2
  [[ $# -ge 1 ]] || { sed -n "2,${lines}p" "$0"; exit 2; }
  [[ -f "$1" ]] || die "$what not found: $1"
  FIRST="$1"
  parse_launch_args "${@:2}"
}

# prepare_training_run LOG_PATTERN...: check ENTRY (default train.py); resolve OUTPUT_DIR from
# CONFIG, device_target and OVERRIDES (OVR holds them for the training command); create LOG_DIR
# and move the earlier logs matching the patterns to LOG_DIR/previous/<time>/.
prepare_training_run() {
  ENTRY="${ENTRY:-$ROOT/train.py}"
  [[ -f "$ENTRY" ]] || die "training script not found: $ENTRY"
  OVR=("device_target=$DEVICE_TARGET" "${OVERRIDES[@]}")
  OUTPUT_DIR="$(resolve_output_dir "$CONFIG" "${OVR[@]}")" || exit 2
  LOG_DIR="$OUTPUT_DIR/logs"
  mkdir -p "$LOG_DIR" || die "cannot create $LOG_DIR"
  archive_old_logs "$LOG_DIR" "$@"
}
