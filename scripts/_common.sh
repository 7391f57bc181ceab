# The prelude every launcher sources (scripts/*.sh and run_with_gpu/run_quick_start.sh):
# ROOT, PYTHON, PYTHONPATH, the usage text, errors, the argument parser and the run-directory
# helpers. Sourced, not run.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# How the messages name the script: relative to the repository, as the user types it.
SCRIPT="$(realpath --relative-to="$ROOT" "$0" 2>/dev/null || basename "$0")"

die() { echo "$SCRIPT: error: $*" >&2; exit 2; }

# The calling script's header comment (every line after the shebang up to the first line that
# is not a comment) is its usage text.
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

check_device_target() {
  case "$DEVICE_TARGET" in
    CPU|GPU|Ascend) ;;
    *) die "DEVICE_TARGET must be CPU, GPU or Ascend, got '$DEVICE_TARGET'" ;;
  esac
}

# ---------------------------------------------------------------- arguments
# Every launcher reads the same grammar, so no argument is classified by its shape alone:
#
#   SCRIPT [--option ...] FIRST [SECOND] [key=value ...] [-- ENTRY_ARGS ...]
#
# FIRST (CONFIG or CKPT) is the first word that is not an option; SECOND, where the script has
# one (NUM_DEVICES, DEVICE_ID), must be a whole number right after it; then config overrides
# (key=value). Options are the script's own named ones, anywhere before `--`, as `--name VALUE`
# or `--name=VALUE`; some are forwarded to the entry as they are (e.g. --resume for train.py,
# --test-size for eval.py). Everything after `--` goes to the entry untouched. Anything else is
# an error naming the argument and the spelling that works.
#
# The script declares, before calling parse_launch_args "$@":
#   FIRST_NAME=CONFIG         FIRST_OPTIONAL=0|1
#   SECOND_NAME=NUM_DEVICES   (empty: no second slot)
#   OPTS=(name=ARG flag ...)  its own options (name=ARG takes a value)
#   FWD_OPTS=(...)            options passed on to the entry, same notation
#   ENTRY_NAME=train.py       named in the messages
#   ALLOW_PASS=0|1            whether `--` pass-through is accepted
#   hint_positional WORD      (optional function) prints a hint for a misplaced bare word
# and gets FIRST, SECOND, OVERRIDES (array), FORWARD (array: forwarded options, in order),
# PASS (array: after --) and OPT[name] (its own options' values; flags are 1).
FIRST_OPTIONAL=0
SECOND_NAME=""
OPTS=()
FWD_OPTS=()
ALLOW_PASS=1
declare -A OPT=()

_opt_spec() {  # _opt_spec NAME: prints "own|fwd value|flag" for a declared option, else nothing
  local s
  for s in "${OPTS[@]}"; do
    [[ "${s%%=*}" == "$1" ]] && { [[ "$s" == *=* ]] && echo "own value" || echo "own flag"; return; }
  done
  for s in "${FWD_OPTS[@]}"; do
    [[ "${s%%=*}" == "$1" ]] && { [[ "$s" == *=* ]] && echo "fwd value" || echo "fwd flag"; return; }
  done
  return 0
}

parse_launch_args() {
  FIRST=""; SECOND=""; OVERRIDES=(); FORWARD=(); PASS=(); OPT=()
  local a name val spec hint
  while (( $# )); do
    a="$1"; shift
    case "$a" in
      --)
        (( ALLOW_PASS )) || die "'--': $SCRIPT passes no further arguments to $ENTRY_NAME"
        PASS=("$@"); break ;;
      -h|--help) usage; exit 0 ;;
      --?*)
        name="${a#--}"; name="${name%%=*}"
        spec="$(_opt_spec "$name")"
        if [[ -z "$spec" ]]; then
          if (( ALLOW_PASS )); then
            die "unknown option '$a'. Arguments for $ENTRY_NAME go after '--':" \
                "bash $SCRIPT ${FIRST:-$FIRST_NAME} ... -- $a   (see --help)"
          fi
          die "unknown option '$a' (see bash $SCRIPT --help)"
        fi
        if [[ "$spec" == *value ]]; then
          if [[ "$a" == *=* ]]; then val="${a#*=}"
          else
            (( $# )) && [[ "$1" != --* ]] || die "option --$name needs a value: --$name VALUE"
            val="$1"; shift
          fi
          [[ -n "$val" ]] || die "option --$name needs a value: --$name VALUE"
        else
          [[ "$a" != *=* ]] || die "option --$name takes no value: write '--$name' alone"
          val=1
        fi
        if [[ "$spec" == fwd* ]]; then
          if [[ "$spec" == *value ]]; then FORWARD+=("--$name" "$val"); else FORWARD+=("--$name"); fi
        else
          OPT[$name]="$val"
        fi ;;
      -*) die "unknown option '$a' (see bash $SCRIPT --help)" ;;
      *=*)
        [[ -n "$FIRST" || "$FIRST_OPTIONAL" == 1 ]] \
          || die "'$a' comes before $FIRST_NAME; write: bash $SCRIPT $FIRST_NAME ${SECOND_NAME:+[$SECOND_NAME] }$a"
        OVERRIDES+=("$a") ;;
      *)
        hint="$(declare -F hint_positional >/dev/null && hint_positional "$a" || true)"
        if [[ -z "$FIRST" && ${#OVERRIDES[@]} -eq 0 ]]; then
          FIRST="$a"
        elif [[ -n "$SECOND_NAME" && -z "$SECOND" && ${#OVERRIDES[@]} -eq 0 ]]; then
          [[ "$a" =~ ^[0-9]+$ ]] \
            || die "'$a' is not $SECOND_NAME (a whole number after $FIRST_NAME) nor key=value${hint:+; $hint}"
          SECOND="$a"
        elif [[ -n "$SECOND" && "$a" =~ ^[0-9]+$ ]]; then
          die "unexpected argument '$a': $SECOND_NAME is already $SECOND${hint:+; $hint}"
        elif [[ -n "$SECOND_NAME" && "$a" =~ ^[0-9]+$ ]]; then
          die "'$a': $SECOND_NAME comes right after $FIRST_NAME, before any key=value:" \
              "bash $SCRIPT $FIRST_NAME $a key=value ..."
        else
          die "unexpected argument '$a' (after $FIRST_NAME${SECOND_NAME:+ [$SECOND_NAME]} only" \
              "key=value overrides and options come)${hint:+; $hint}"
        fi ;;
    esac
  done
  if [[ -z "$FIRST" && "$FIRST_OPTIONAL" != 1 ]]; then
    usage >&2
    exit 2
  fi
}

# ---------------------------------------------------------------- one process, one device
# select_one_device [DEVICE_ID]: the environment of a single (non-distributed) process on
# DEVICE_TARGET. On GPU the process sees only that card (CUDA_VISIBLE_DEVICES), which it then
# knows as device 0: an inherited DEVICE_ID would select a card that is not visible, so it is set
# to 0. On Ascend DEVICE_ID is the card. A stray dynamic-cluster environment would make the
# entry wait for a scheduler, so it is dropped.
select_one_device() {
  local dev="${1:-}"
  case "$DEVICE_TARGET" in
    GPU) export CUDA_VISIBLE_DEVICES="${dev:-${CUDA_VISIBLE_DEVICES:-0}}" DEVICE_ID=0 ;;
    Ascend) export DEVICE_ID="${dev:-${DEVICE_ID:-0}}" ;;
    CPU) unset DEVICE_ID ;;
  esac
  unset MS_ROLE MS_WORKER_NUM MS_SCHED_HOST MS_SCHED_PORT MS_NODE_ID RANK_ID
}

# The environment select_one_device left, for the dry-run listing.
device_env_text() {
  local v out=()
  for v in CUDA_VISIBLE_DEVICES DEVICE_ID; do
    [[ -n "${!v+x}" ]] && out+=("$v=${!v}")
  done
  echo "${out[*]:-(no device variables)}"
}

# ---------------------------------------------------------------- run directory
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

# prepare_log_dir DIR LOG_PATTERN...: create DIR and move the earlier logs matching the patterns
# to DIR/previous/<time>/ (nothing is touched under --dry-run).
prepare_log_dir() {
  LOG_DIR="$1"; shift
  [[ -n "${OPT[dry-run]:-}" ]] && return 0
  mkdir -p "$LOG_DIR" || die "cannot create $LOG_DIR"
  archive_old_logs "$LOG_DIR" "$@"
}

# prepare_training_run LOG_PATTERN...: check ENTRY (default train.py); resolve OUTPUT_DIR from
# CONFIG, device_target and OVERRIDES (OVR holds them for the training command); prepare
# OUTPUT_DIR/logs; ENTRY_CMD is the command every process runs.
prepare_training_run() {
  ENTRY="${ENTRY:-$ROOT/train.py}"
  [[ -f "$ENTRY" ]] || die "training script not found: $ENTRY (ENTRY)"
  [[ -f "$CONFIG" ]] || die "config file not found: $CONFIG"
  OVR=("device_target=$DEVICE_TARGET" "${OVERRIDES[@]}")
  OUTPUT_DIR="$(resolve_output_dir "$CONFIG" "${OVR[@]}")" || exit 2
  prepare_log_dir "$OUTPUT_DIR/logs" "$@"
  ENTRY_CMD=("$PYTHON" "$ENTRY" --config "$CONFIG" "${OVR[@]}" "${FORWARD[@]}" "${PASS[@]}")
}

# print_command LABEL CMD...: one line, shell-quoted, that can be pasted to run it.
print_command() {
  local label="$1"; shift
  printf '[%s]' "$label"
  printf ' %q' "$@"
  printf '\n'
}
