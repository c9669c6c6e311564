# Shared by the launch/*.sh scripts (source it; do not run it): flag parsing, dry run, quoting.
#
# Flags are --name=value or --name value (dashes and underscores alike); every flag NAME may
# also come from the environment variable of the same name in upper case (TPU_NAME, ZONE, ...).
# --dry-run (or DRY_RUN=1) prints every command, one per line, exactly as it would run, and
# runs nothing; gcloud is then not needed.
set -euo pipefail

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$LAUNCH_DIR")"
DRY_RUN="${DRY_RUN:-0}"
ENVS=()   # --env KEY=VALUE (repeatable)
ARGS=()   # everything after --

die() { echo "error: $*" >&2; exit 2; }

# quote WORD...: the words as one shell line (words with special characters in single quotes).
quote() {
  local out=() w
  for w in "$@"; do
    if [[ -n "$w" && "$w" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=("$w")
    else
      out+=("'${w//\'/\'\"\'\"\'}'")
    fi
  done
  echo "${out[*]}"
}

# parse_flags "allowed names" "$@": sets the upper-case variable of each flag; rest -> ARGS.
parse_flags() {
  local allowed=" $1 " key value
  shift
  while (($#)); do
    case "$1" in
      --) shift; ARGS=("$@"); return 0 ;;
      --dry-run|--dry_run) DRY_RUN=1 ;;
      --help|-h) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
      --*=*) key="${1%%=*}"; value="${1#*=}"; _set_flag "$allowed" "${key#--}" "$value" ;;
      --*) (($# >= 2)) || die "flag $1 needs a value"
           _set_flag "$allowed" "${1#--}" "$2"; shift ;;
      *) die "unexpected argument '$1': flags are --name=value, and a command goes after --" ;;
    esac
    shift
  done
}

_set_flag() {
  local allowed="$1" key="${2//-/_}" value="$3"
  [[ "$allowed" == *" $key "* ]] || die "unknown flag --$2; allowed:$(printf ' --%s' $allowed) --dry-run"
  if [[ "$key" == env ]]; then
    [[ "$value" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || die "--env $value: expected KEY=VALUE"
    ENVS+=("$value")
  else
    printf -v "${key^^}" '%s' "$value"
  fi
}

# require NAME...: every variable must be set and non-empty (names in upper case).
require() {
  local missing=() name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("--$(echo "$name" | tr 'A-Z' 'a-z') (or \$$name)")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}; see $0 --help"
}

need_gcloud() {
  [[ "$DRY_RUN" == 1 ]] && return 0
  command -v gcloud >/dev/null 2>&1 || die "gcloud is not installed or not on PATH: install the \
Google Cloud CLI (https://cloud.google.com/sdk/docs/install) or use --dry-run to see the commands"
}

# run CMD...: print it (dry run) or run it.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then quote "$@"; else "$@"; fi
}

# run_logged LOGFILE CMD...: run CMD with its output shown and appended to LOGFILE; CMD's status.
run_logged() {
  local log="$1"
  shift
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "$(quote "$@") 2>&1 | tee -a $(quote "$log")"
    return 0
  fi
  mkdir -p "$(dirname "$log")"
  set +e
  "$@" 2>&1 | tee -a "$log"
  local status=${PIPESTATUS[0]}
  set -e
  return "$status"
}
