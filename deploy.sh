#!/usr/bin/env bash
# deploy.sh — one command from a fresh GPU VM to a running, supervised, password-protected Wenmo.
#
#   sudo ./deploy.sh                       install, or upgrade in place; start; wait until ready
#   sudo ./deploy.sh status | logs [-f] | start | stop | restart | uninstall [--purge]
#   ./deploy.sh --help                     every option (README.md "Deploying" has the details)
#
# Safe to re-run: the virtualenv is reused while requirements.txt is unchanged, the password is kept
# (unless --rotate-password), your settings in wenmo.override.env are never rewritten, and the service
# restarts on the new code. It stops with a message at the first thing that is wrong.
#
# Test hooks (environment): WENMO_DEPLOY_NVIDIA_SMI (nvidia-smi to run), WENMO_DEPLOY_OS_RELEASE
# (os-release file to read), WENMO_DEPLOY_PIP_ARGS (extra pip arguments, e.g. an index or --find-links).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly REPO
readonly SERVICE=wenmo
readonly HTTP_USER=wenmo
readonly MIN_PYTHON=3.10
# PyPI's torch is a CUDA 12+ build: no driver older than branch 525 can run it (a newer CUDA may need a
# newer driver: after installing, deploy.sh checks that torch really sees the GPU).
readonly MIN_DRIVER_MAJOR=525
# The same ids as DEFAULT_*_MODEL in app/config.py (tests/deploy checks that they agree).
readonly DEFAULT_EMBED_MODEL=iic/nlp_gte_sentence-embedding_chinese-large
readonly DEFAULT_CROSS_MODEL=iic/nlp_structbert_sentence-similarity_chinese-large
readonly DEFAULT_NLU_MODEL=iic/nlp_deberta_rex-uninlu_chinese-base
# Disk needed, MiB: the three checkpoints (~3.4 GB), the virtualenv (torch with CUDA libraries, or not).
readonly NEED_MODELS_MIB=5120 NEED_VENV_GPU_MIB=10240 NEED_VENV_CPU_MIB=4096

# ---- output ---------------------------------------------------------------------------------------------
STARTED_AT=$SECONDS
STEP=0
readonly STEPS=6
step() { STEP=$((STEP + 1)); printf '\n==> [%d/%d] %s\n' "$STEP" "$STEPS" "$*"; }
say() { printf '    %s\n' "$*"; }
warn() { printf '    warning: %s\n' "$*" >&2; }
die() {
  printf '\ndeploy.sh: error: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '    %s\n' "$line" >&2; done
  exit 1
}
usage_error() { printf 'deploy.sh: %s (see ./deploy.sh --help)\n' "$*" >&2; exit 2; }
elapsed() {
  local s=$((SECONDS - STARTED_AT))
  if ((s >= 60)); then printf '%d min %d s' $((s / 60)) $((s % 60)); else printf '%d s' "$s"; fi
}
quote() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }

# Every change to the system goes through run / put_file, so --dry-run can print it instead.
DRY_RUN=0
run() {
  if ((DRY_RUN)); then printf '    would run: %s\n' "$(quote "$@")"; return 0; fi
  printf '    + %s\n' "$(quote "$@")"
  "$@"
}
# put_file PATH MODE OWNER [SHOW]: write stdin to PATH atomically. SHOW=secret hides the content.
put_file() {
  local path=$1 mode=$2 owner=$3 show=${4:-show} content tmp
  content=$(cat)
  if ((DRY_RUN)); then
    printf '    would write %s (mode %s, owner %s)\n' "$path" "$mode" "$owner"
    if [[ $show == secret ]]; then
      printf '    (content not shown: it is a secret)\n'
    else
      printf -- '----- %s -----\n%s\n----- end of %s -----\n' "$path" "$content" "$path"
    fi
    return 0
  fi
  tmp=$(mktemp "$path.XXXXXX")
  chmod "$mode" "$tmp"
  [[ $owner == root || $(id -u) != 0 ]] || chown "$owner" "$tmp"
  printf '%s\n' "$content" >"$tmp"
  mv -f "$tmp" "$path"
}

# ---- options --------------------------------------------------------------------------------------------
usage() {
  cat <<'EOF'
Usage: sudo ./deploy.sh [COMMAND] [OPTIONS]

Commands:
  install              (default) check the machine, install or upgrade, configure, download the
                       models, create the password once, start the service, wait until it is ready
  status               is it running and ready; the launcher's last state
  logs [-f]            the last 200 log lines (-f: follow)
  start | stop | restart
  uninstall [--purge]  remove the service, code and virtualenv; keeps models, password and
                       wenmo.override.env unless --purge
  profile              print the tuning profile for this GPU (or --gpu-name/--gpu-mib, or --cpu)

Install options (remembered for re-runs: flags that set WENMO_* values go to wenmo.override.env,
--cpu/--demo/--no-systemd/--user to <prefix>/etc/deploy.conf):
  --prefix DIR         where everything goes (default /opt/wenmo)
  --port N             port to serve on (default 7860)
  --host ADDR          address to bind (default 0.0.0.0: every interface)
  --user NAME          unprivileged account the service runs as (default wenmo, created if missing)
  --models-dir DIR     ModelScope cache; an existing copy there is used as is (default <prefix>/models)
  --cpu | --gpu        run on the CPU (no NVIDIA GPU needed) | back to the GPU
  --demo | --no-demo   tiny offline models: a first look without network or GPU (outputs meaningless)
  --no-systemd | --systemd
                       start the launcher in the background (pid file + log file) instead of a
                       systemd unit, for machines without systemd
  --rotate-password    make a new password (otherwise the first one is kept forever)
  --dry-run            print every action, the settings and the unit file; change nothing
  --python PATH        Python 3.10+ to build the virtualenv from (default /usr/bin/python3)
  --wait-s N           how long to wait for /readyz (default 900)
  --max-batch-tokens N, --max-batch-size N, --max-length N, --max-concurrent N,
  --threshold-mib N, --drain-s N
                       override the GPU profile (WENMO_MAX_*, WENMO_LAUNCHER_THRESHOLD_MIB,
                       WENMO_LAUNCHER_DRAIN_S)
  --set NAME=VALUE     any other app/launcher setting, e.g. --set WENMO_MAX_QUEUE=64
  --purge              with uninstall: also delete models, password, settings, state and the user
  -f, --follow         with logs: follow
  --gpu-name NAME --gpu-mib N
                       with profile: the GPU to print the profile for
  -h, --help           this text

Environment: WENMO_DEPLOY_PIP_ARGS="..." adds arguments to every pip install (an index, a cache).
EOF
}

COMMAND=install
OPT_PREFIX='' OPT_USER='' OPT_PYTHON='' OPT_CPU='' OPT_DEMO='' OPT_MODE=''
OPT_ROTATE=0 OPT_PURGE=0 OPT_FOLLOW=0 OPT_WAIT_S=900 OPT_GPU_NAME='' OPT_GPU_MIB=''
FLAG_KEYS=() FLAG_VALUES=() FLAG_NAMES=()

# flag_set FLAG KEY VALUE: remember a WENMO_* value given on the command line.
flag_set() { FLAG_NAMES+=("$1"); FLAG_KEYS+=("$2"); FLAG_VALUES+=("$3"); }
need_int() { [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 needs a whole number, got '$2'"; }

parse_args() {
  local arg value
  while (($#)); do
    arg=$1
    value=''
    if [[ $arg == --*=* ]]; then value=${arg#*=}; arg=${arg%%=*}; set -- "$arg" "$value" "${@:2}"; fi
    case $arg in
      install | status | logs | start | stop | restart | uninstall | profile) COMMAND=$arg ;;
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --cpu) OPT_CPU=1 ;;
      --gpu) OPT_CPU=0 ;;
      --demo) OPT_DEMO=1 ;;
      --no-demo) OPT_DEMO=0 ;;
      --no-systemd) OPT_MODE=background ;;
      --systemd) OPT_MODE=systemd ;;
      --rotate-password) OPT_ROTATE=1 ;;
      --purge) OPT_PURGE=1 ;;
      -f | --follow) OPT_FOLLOW=1 ;;
      --prefix | --user | --python | --wait-s | --port | --host | --models-dir | --max-batch-tokens | \
        --max-batch-size | --max-length | --max-concurrent | --threshold-mib | --drain-s | --set | \
        --gpu-name | --gpu-mib)
        (($# >= 2)) || usage_error "$arg needs a value"
        value=$2
        shift
        case $arg in
          --prefix) [[ $value == /* ]] || usage_error "--prefix needs an absolute path, got '$value'"
            OPT_PREFIX=${value%/} ;;
          --user) [[ $value =~ ^[a-z_][a-z0-9_-]*$ ]] || usage_error "--user: '$value' is not a user name"
            OPT_USER=$value ;;
          --python) OPT_PYTHON=$value ;;
          --wait-s) need_int "$arg" "$value"; OPT_WAIT_S=$value ;;
          --port) need_int "$arg" "$value"
            ((value >= 1 && value <= 65535)) || usage_error "--port must be 1..65535, got $value"
            flag_set "$arg" WENMO_PORT "$value" ;;
          --host) [[ -n $value && $value != *[[:space:]/@]* ]] || usage_error "--host: '$value' is not an address"
            flag_set "$arg" WENMO_HOST "$value" ;;
          --models-dir) [[ $value == /* ]] || usage_error "--models-dir needs an absolute path, got '$value'"
            flag_set "$arg" WENMO_MODEL_DIR "${value%/}" ;;
          --max-batch-tokens) need_int "$arg" "$value"; flag_set "$arg" WENMO_MAX_BATCH_TOKENS "$value" ;;
          --max-batch-size) need_int "$arg" "$value"; flag_set "$arg" WENMO_MAX_BATCH_SIZE "$value" ;;
          --max-length) need_int "$arg" "$value"; flag_set "$arg" WENMO_MAX_LENGTH "$value" ;;
          --max-concurrent) need_int "$arg" "$value"; flag_set "$arg" WENMO_MAX_CONCURRENT "$value" ;;
          --threshold-mib) need_int "$arg" "$value"; flag_set "$arg" WENMO_LAUNCHER_THRESHOLD_MIB "$value" ;;
          --drain-s) need_int "$arg" "$value"; flag_set "$arg" WENMO_LAUNCHER_DRAIN_S "$value" ;;
          --set)
            [[ $value =~ ^(WENMO_[A-Z0-9_]+)=(.*)$ ]] || usage_error "--set needs WENMO_NAME=VALUE, got '$value'"
            case ${BASH_REMATCH[1]} in
              WENMO_AUTH | WENMO_AUTH_FILE)
                usage_error "the password is not a setting: it lives in the credential file (--rotate-password)" ;;
            esac
            flag_set "$arg" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" ;;
          --gpu-name) OPT_GPU_NAME=$value ;;
          --gpu-mib) need_int "$arg" "$value"; OPT_GPU_MIB=$value ;;
        esac ;;
      *) usage_error "unknown option or command '$arg'" ;;
    esac
    shift
  done
}

# ---- paths and the record of an installation ------------------------------------------------------------
set_paths() {
  PREFIX=$1
  ETC=$PREFIX/etc
  GEN_FILE=$ETC/wenmo.env
  GEN_WRITTEN=$ETC/.wenmo.env.written
  OVR_FILE=$ETC/wenmo.override.env
  CONF_FILE=$ETC/deploy.conf
  DS_FILE=$ETC/ds_config.json
  CRED_DIR=$ETC/credentials
  CRED_FILE=$CRED_DIR/wenmo-auth
  VENV=$PREFIX/venv
  SRC=$PREFIX/src
  RUN_DIR=$PREFIX/run
  PID_FILE=$RUN_DIR/wenmo.pid
  RUN_CRED=$RUN_DIR/wenmo-auth
  LOG_DIR=$PREFIX/log
  LOG_FILE=$LOG_DIR/wenmo.log
  UNIT_FILE=/etc/systemd/system/$SERVICE.service
  MARKER=$PREFIX/.wenmo-deploy
}

default_prefix() {
  # Run from an installed copy (<prefix>/src/deploy.sh), the installation it belongs to is the default.
  if [[ -f $REPO/../etc/deploy.conf ]]; then (cd "$REPO/.." && pwd); else printf '/opt/wenmo\n'; fi
}

# read_env_file FILE ARRAY: KEY=VALUE lines into an associative array, like systemd's EnvironmentFile=
# (comments and blank lines skipped, one level of quotes removed, the last of duplicate keys wins).
read_env_file() {
  local file=$1 line key val
  local -n into=$2
  [[ -r $file ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line#"${line%%[![:space:]]*}"}
    [[ -z $line || $line == '#'* || $line == ';'* ]] && continue
    line=${line#export }
    [[ $line == *=* ]] || continue
    key=${line%%=*}
    key=${key%"${key##*[![:space:]]}"}
    val=${line#*=}
    if [[ $val =~ ^\"(.*)\"$ || $val =~ ^\'(.*)\'$ ]]; then val=${BASH_REMATCH[1]}; fi
    # shellcheck disable=SC2034,SC2004 # `into` is the caller's associative array
    [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && into[$key]=$val
  done <"$file"
  return 0
}

declare -A CONF=()
load_conf() { CONF=(); read_env_file "$CONF_FILE" CONF; }

# ---- checks ---------------------------------------------------------------------------------------------
check_repo() {
  [[ -d $REPO/app && -d $REPO/launcher && -f $REPO/requirements.txt && -f $REPO/ds_config.json ]] ||
    die "deploy.sh must run from a Wenmo checkout: $REPO has no app/, launcher/ or requirements.txt" \
      "clone the repository and run ./deploy.sh from its top directory"
}

check_os() {
  local file=${WENMO_DEPLOY_OS_RELEASE:-/etc/os-release}
  declare -A os=()
  read_env_file "$file" os
  local id=${os[ID]:-unknown} like=${os[ID_LIKE]:-} pretty=${os[PRETTY_NAME]:-${os[ID]:-an unknown system}}
  if [[ $id == debian || $id == ubuntu || " $like " == *" debian "* || " $like " == *" ubuntu "* ]]; then
    say "OS: $pretty"
  else
    die "unsupported OS: $pretty ($file says ID=$id)" \
      "deploy.sh supports Debian and Ubuntu (it uses apt-get and systemd)." \
      "On another system follow the manual steps in README.md (Deploying)."
  fi
}

check_privileges() {
  if [[ $MODE == systemd && ${OPT_USER:-} == root ]]; then
    die "--user root: the service must run as an unprivileged user" "leave --user out (a 'wenmo' user is created)"
  fi
  if [[ $(id -u) == 0 ]]; then return 0; fi
  ((DRY_RUN)) && { say "not root: fine for --dry-run"; return 0; }
  if [[ $MODE == systemd ]]; then
    die "installing a systemd service needs root" "run: sudo $0 ${ORIGINAL_ARGS[*]}" \
      "(or, without root, --no-systemd --prefix DIR in a directory you own)"
  fi
  if [[ -n $OPT_USER && $OPT_USER != "$(id -un)" ]]; then
    die "--user $OPT_USER needs root (without root the service runs as you, $(id -un))"
  fi
}

# The nearest existing ancestor of a path (the path itself if it exists).
existing_ancestor() {
  local p=$1
  while [[ ! -e $p ]]; do p=$(dirname "$p"); done
  printf '%s\n' "$p"
}

check_writable() {  # check_writable PATH WHAT
  local path=$1 what=$2 base
  base=$(existing_ancestor "$path")
  if [[ ! -d $base ]]; then
    die "cannot create $what $path: $base is not a directory" "choose another location (--prefix / --models-dir)"
  fi
  if [[ ! -w $base ]]; then
    die "cannot write $what $path: $base is not writable$([[ $(id -u) == 0 ]] && printf ' (read-only file system?)' || printf ' by %s' "$(id -un)")" \
      "choose another location (--prefix / --models-dir)$([[ $(id -u) == 0 ]] || printf ', or run with sudo')"
  fi
  return 0
}

# access(2) can be wrong (NFS root squash, ACLs): create the directory for real before anything else.
create_writable() {  # create_writable PATH WHAT
  local path=$1 what=$2 err
  ((DRY_RUN)) && return 0
  if ! err=$(mkdir -p "$path" 2>&1) || ! err=$(touch "$path/.wenmo-write-test" 2>&1); then
    die "cannot write $what $path: ${err#*: }" "choose another location (--prefix / --models-dir)"
  fi
  rm -f "$path/.wenmo-write-test"
}

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

check_python() {
  PY=${OPT_PYTHON:-${CONF[python]:-}}
  if [[ -z $PY ]]; then
    if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3 || true); fi
  fi
  if [[ -z $PY || ! -x $(command -v "$PY" || true) ]]; then
    if [[ -z $OPT_PYTHON ]] && command -v apt-get >/dev/null; then
      apt_install "Python 3" python3 python3-venv
      PY=/usr/bin/python3
    else
      die "no Python found (${PY:-python3})" "install it: sudo apt-get install python3 python3-venv (or --python PATH)"
    fi
  fi
  PY=$(command -v "$PY")
  local version
  version=$(python_version "$PY") || die "$PY does not run" "check it, or choose another with --python PATH"
  version_ge "$version" "$MIN_PYTHON" ||
    die "$PY is Python $version; Wenmo needs $MIN_PYTHON or newer" \
      "install a newer one (Ubuntu 20.04: the deadsnakes PPA's python3.11 + python3.11-venv) and pass --python /usr/bin/python3.11"
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian and Ubuntu ship venv's ensurepip in a separate package; only apt's own Python (installed
    # under /usr: Debian's, Ubuntu's, deadsnakes') can get it from apt.
    if [[ $("$PY" -c 'import sys; print(sys.base_prefix)' 2>/dev/null) == /usr ]] && command -v apt-get >/dev/null; then
      apt_install "Python's venv module" "python$version-venv" python3-venv
      ((DRY_RUN)) || "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$PY still has no venv module after installing python$version-venv" "install it by hand and re-run"
    else
      die "$PY (Python $version) has no venv module" \
        "install it for that Python (Debian/Ubuntu: sudo apt-get install python$version-venv)," \
        "or use the system Python: --python /usr/bin/python3"
    fi
  fi
  say "Python: $PY ($version, venv available)"
}

apt_install() {  # apt_install WHAT PACKAGE...: the first of the packages that installs wins
  local what=$1 pkg updated=0
  shift
  say "$what is missing: installing it with apt-get"
  if ((DRY_RUN)); then run apt-get install -y "$1"; return 0; fi
  [[ $(id -u) == 0 ]] || die "$what is missing" "install it: sudo apt-get install $1"
  export DEBIAN_FRONTEND=noninteractive
  for pkg in "$@"; do
    if run apt-get install -y -q "$pkg"; then return 0; fi
    # A fresh VM often has no package lists yet.
    if ((!updated)); then
      updated=1
      run apt-get update -q || true
      if run apt-get install -y -q "$pkg"; then return 0; fi
    fi
  done
  die "apt-get could not install $what ($*; see its message above)" "install it yourself (sudo apt-get install $1) and re-run"
}

# Fills GPU_NAME, GPU_MIB, GPU_DRIVER, GPU_COUNT; or dies with what to do.
detect_gpu() {
  local smi=${WENMO_DEPLOY_NVIDIA_SMI:-nvidia-smi} out rc=0 first
  if ! command -v "$smi" >/dev/null 2>&1; then
    return 1
  fi
  out=$("$smi" --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits 2>&1) || rc=$?
  if ((rc != 0)) || [[ -z $out ]]; then
    die "nvidia-smi is installed but failed (exit $rc): $(head -n1 <<<"$out")" \
      "The NVIDIA driver is not working. After a driver or kernel upgrade a reboot usually fixes it;" \
      "otherwise reinstall the driver (Ubuntu: sudo ubuntu-drivers install). To run on the CPU instead: --cpu"
  fi
  first=$(head -n1 <<<"$out")
  GPU_COUNT=$(grep -c . <<<"$out")
  IFS=',' read -r GPU_NAME GPU_MIB GPU_DRIVER <<<"$first"
  GPU_NAME=$(xargs <<<"$GPU_NAME")
  GPU_MIB=$(xargs <<<"$GPU_MIB")
  GPU_DRIVER=$(xargs <<<"$GPU_DRIVER")
  [[ $GPU_MIB =~ ^[0-9]+$ ]] || die "cannot read the GPU's memory from nvidia-smi: '$first'" \
    "(MIG and some virtual GPUs report [N/A]) set the profile by hand: --cpu, or --max-batch-tokens etc."
  return 0
}

check_gpu() {
  GPU_NAME='' GPU_MIB=0 GPU_DRIVER='' GPU_COUNT=0
  if [[ $CPU == 1 ]]; then say "GPU: not used (--cpu): inference runs on the CPU, much slower"; return 0; fi
  if ! detect_gpu; then
    if [[ $DEMO == 1 ]]; then
      say "GPU: none found (no nvidia-smi); --demo runs on the CPU"
      CPU=1
      return 0
    fi
    die "no NVIDIA GPU driver found: nvidia-smi is not on the PATH" \
      "On a GPU VM, install the NVIDIA driver and reboot (Ubuntu: sudo ubuntu-drivers install;" \
      "Debian: apt-get install nvidia-driver from non-free), or use a cloud image that has it." \
      "No GPU on this machine? Run on the CPU (slow, for trying things out): $0 --cpu" \
      "or have a first look with tiny offline models: $0 --demo"
  fi
  local major=${GPU_DRIVER%%.*}
  if [[ $major =~ ^[0-9]+$ ]] && ((major < MIN_DRIVER_MAJOR)); then
    die "NVIDIA driver $GPU_DRIVER is too old: PyTorch's CUDA 12 build needs driver $MIN_DRIVER_MAJOR or newer" \
      "upgrade the driver (Ubuntu: sudo ubuntu-drivers install; then reboot), or run on the CPU: --cpu"
  fi
  say "GPU: $GPU_NAME, $GPU_MIB MiB, driver $GPU_DRIVER$( ((GPU_COUNT > 1)) && printf ' (%d GPUs; Wenmo uses GPU 0)' "$GPU_COUNT")"
}

check_systemd() {
  [[ $MODE == systemd ]] || return 0
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    SYSTEMD_VERSION=$(systemctl --version | awk 'NR==1 {print $2}')
    say "systemd: $SYSTEMD_VERSION"
    return 0
  fi
  SYSTEMD_VERSION=$(systemctl --version 2>/dev/null | awk 'NR==1 {print $2}' || true)
  SYSTEMD_VERSION=${SYSTEMD_VERSION:-255}
  if ((DRY_RUN)); then
    warn "systemd is not running on this machine: a real run would stop here (use --no-systemd)"
    return 0
  fi
  die "systemd is not running on this machine (a container?)" \
    "start Wenmo as a background process instead: $0 --no-systemd ${ORIGINAL_ARGS[*]}"
}

# Free MiB on the file system holding PATH (or its nearest existing ancestor).
free_mib() { df -Pk "$(existing_ancestor "$1")" | awk 'NR==2 {print int($4 / 1024), $6}'; }

check_disk() {
  declare -A need=() where=()
  local path mib free mount
  if [[ $(venv_state) != current ]]; then
    mib=$NEED_VENV_GPU_MIB
    [[ $CPU == 1 ]] && mib=$NEED_VENV_CPU_MIB
    read -r free mount < <(free_mib "$PREFIX")
    need[$mount]=$((${need[$mount]:-0} + mib)); where[$mount]+=" virtualenv (${mib} MiB)"
  fi
  if [[ $DEMO != 1 ]] && (($(missing_models | wc -l) > 0)); then
    read -r free mount < <(free_mib "$MODEL_DIR")
    need[$mount]=$((${need[$mount]:-0} + NEED_MODELS_MIB))
    where[$mount]+=" models (${NEED_MODELS_MIB} MiB)"
  fi
  for mount in "${!need[@]}"; do
    path=$mount
    read -r free _ < <(free_mib "$path")
    mib=${need[$mount]}
    if ((free < mib)); then
      die "not enough disk space on $mount: $free MiB free, ${need[$mount]} MiB needed for${where[$mount]}" \
        "free some space, grow the disk, or put the models elsewhere: --models-dir /bigdisk/wenmo-models"
    fi
    say "disk: $free MiB free on $mount (needs ${need[$mount]} MiB for${where[$mount]})"
  done
  ((${#need[@]})) || say "disk: nothing new to download or install"
}

# The address to probe the service on: loopback when it binds every interface.
probe_host() {
  case $1 in
    0.0.0.0 | '' | '*') printf '127.0.0.1' ;;
    :: | '[::]') printf '[::1]' ;;
    *:*) local h=${1#[}; printf '[%s]' "${h%]}" ;;
    *) printf '%s' "$1" ;;
  esac
}

port_free() {  # port_free HOST PORT: empty output when free, else the reason
  "$PY" - "$1" "$2" <<'EOF'
import socket, sys
host, port = sys.argv[1].strip("[]"), int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the server does: TIME_WAIT is no conflict
try:
    s.bind((host, port))
except OSError as e:
    print(e.strerror or e)
finally:
    s.close()
EOF
}

check_port() {
  local why holder=''
  why=$(port_free "$HOST" "$PORT")
  if [[ -z $why ]]; then say "port: $PORT on $HOST is free"; return 0; fi
  if service_running && [[ ${OLD[WENMO_PORT]:-7860} == "$PORT" ]]; then
    say "port: $PORT is held by the running Wenmo, which will be restarted"
    return 0
  fi
  if command -v ss >/dev/null; then
    holder=$(ss -ltnpH "sport = :$PORT" 2>/dev/null | grep -o 'users:(([^)]*' | sed -n '1s/users:((//p' || true)
  fi
  die "port $PORT on $HOST is not available: $why${holder:+ (held by $holder)}" \
    "stop the program that holds it, or choose another port: $0 --port 8080 ..."
}

# ---- the GPU profile ------------------------------------------------------------------------------------
# Settings in the order written, each with the comment that explains it.
GEN_KEYS=()
declare -A GEN=() GEN_DOC=()
setting() { GEN_KEYS+=("$1"); GEN[$1]=$2; GEN_DOC[$1]=$3; }

# Requests admitted to the engine at once. With batching across requests (the default) they share forwards in the
# engine's queues — one forward per model at a time, each within the token budget — so admitting more costs no
# activation memory; the app's own default (32) holds on every machine.
ADMISSION_DOC="requests admitted at once: 0 = the app's choice (32: they share forwards, one per model at a time, within the token budget)"

# profile NAME MIB CPU: the tuning for one GPU (or the CPU) as settings.
profile() {
  local name=$1 mib=$2 cpu=$3 tier tokens size length
  if [[ $cpu == 1 ]]; then
    PROFILE="CPU"
    setting WENMO_DEVICE cpu "run on the CPU (--cpu or no GPU found with --demo)"
    setting WENMO_MAX_BATCH_TOKENS 4096 "token budget per forward pass: small batches keep CPU latency low"
    setting WENMO_MAX_BATCH_SIZE 32 "texts per forward pass at most"
    setting WENMO_MAX_LENGTH 512 "tokens per text: the models' own limit (512 positions)"
    setting WENMO_MAX_CONCURRENT 0 "$ADMISSION_DOC"
    setting WENMO_LAUNCHER_THRESHOLD_RATIO 0.80 \
      "the launcher restarts the app when its memory (RSS) stays above 80% of this machine's RAM"
    return 0
  fi
  # Memory decides the batch budget: weights take ~1.8 GB in fp16 for the three models; the rest goes to
  # activations (BERT-large: ~0.13 GB per 1000 tokens per layer at peak, attention included, at 512 tokens).
  if ((mib >= 70000)); then
    tier="80 GB class (A100 80GB, H100, H200)"; tokens=65536; size=256; length=512
  elif ((mib >= 36000)); then
    tier="40-48 GB class (A100 40GB, L40S, A40, A6000)"; tokens=32768; size=256; length=512
  elif ((mib >= 20000)); then
    tier="24 GB class (A10, L4, RTX 3090/4090, A5000)"; tokens=16384; size=128; length=512
  elif ((mib >= 14000)); then
    tier="16 GB class (T4, V100 16GB, A4000)"; tokens=8192; size=64; length=512
  else
    tier="small GPU (< 14 GB: MIG slice or 8-12 GB card)"; tokens=4096; size=32; length=256
  fi
  PROFILE="$tier; found $name with $mib MiB"
  setting WENMO_DEVICE cuda "run on the first GPU ($name); cuda:N picks another"
  case $name in
    *T4* | *V100* | *P100* | *P40* | *P4* | *"RTX 20"* | *"Quadro RTX"*)
      setting WENMO_DTYPE fp16 "this GPU predates Ampere and has no fast bf16: half precision is fp16" ;;
  esac
  setting WENMO_MAX_BATCH_TOKENS "$tokens" "token budget per forward pass (longest text x batch size), sized for $mib MiB"
  setting WENMO_MAX_BATCH_SIZE "$size" "texts per forward pass at most"
  if ((length < 512)); then
    setting WENMO_MAX_LENGTH "$length" "tokens per text: truncated at $length so one batch of long texts fits this GPU"
  else
    setting WENMO_MAX_LENGTH "$length" "tokens per text: the models' own limit (512 positions)"
  fi
  setting WENMO_MAX_CONCURRENT 0 "$ADMISSION_DOC"
  setting WENMO_LAUNCHER_THRESHOLD_MIB $((mib * 85 / 100)) \
    "the launcher restarts the app when it holds more than 85% of the GPU's $mib MiB (a leak, before an OOM)"
}

# All the generated settings: serving, paths, models, then the profile.
build_settings() {
  GEN_KEYS=() GEN=() GEN_DOC=()
  setting WENMO_HOST 0.0.0.0 \
    "address to bind: 0.0.0.0 = every interface (open the port in the cloud firewall); every page asks for the password"
  setting WENMO_PORT 7860 "port to serve on"
  setting WENMO_MODEL_DIR "$PREFIX/models" "ModelScope cache: id owner/name lives in <this>/owner/name"
  setting WENMO_STATE_DIR "$STATE_DIR" "state: launcher events and status, demo models"
  setting WENMO_DS_CONFIG "$DS_FILE" "the DeepSpeed config (yours to edit; deploy.sh keeps your edits)"
  setting WENMO_EMBED_MODEL "$DEFAULT_EMBED_MODEL" "GTE embedding model: ModelScope id or local directory"
  setting WENMO_CROSS_MODEL "$DEFAULT_CROSS_MODEL" "StructBERT cross-encoder: ModelScope id or local directory"
  setting WENMO_NLU_MODEL "$DEFAULT_NLU_MODEL" "RexUniNLU model: ModelScope id or local directory"
  setting WENMO_LOG_LEVEL INFO "DEBUG, INFO, WARNING or ERROR"
  setting WENMO_LAUNCHER_DRAIN_S 30 \
    "seconds in-flight requests get after a stop or restart (the launcher passes it to the app as --drain-s)"
  profile "$GPU_NAME" "$GPU_MIB" "$CPU"
}

# ---- settings files -------------------------------------------------------------------------------------
declare -A OLD=() OVR=() EFF=()
OVR_CHANGES=()  # "KEY=VALUE<TAB>why" lines to write into wenmo.override.env
OVR_DISABLE=()  # keys to comment out there

# Hand edits in the generated file move to the override file instead of being lost on the rewrite.
plan_migration() {
  [[ -f $GEN_FILE ]] || return 0
  declare -A now=() written=()
  read_env_file "$GEN_FILE" now
  read_env_file "$GEN_WRITTEN" written
  [[ -f $GEN_WRITTEN ]] || return 0
  local key
  for key in "${!now[@]}"; do
    if [[ ${written[$key]+set} != set || ${written[$key]} != "${now[$key]}" ]] && [[ ${OVR[$key]+set} != set ]]; then
      warn "$GEN_FILE was edited by hand ($key=${now[$key]}): moving that to $OVR_FILE"
      OVR[$key]=${now[$key]}
      OVR_CHANGES+=("$key=${now[$key]}"$'\t'"moved from wenmo.env, where it was edited by hand")
    fi
  done
  for key in "${!written[@]}"; do
    [[ ${now[$key]+set} == set ]] || warn "$key was deleted from $GEN_FILE by hand; deploy.sh writes it again (to change it, set it in $OVR_FILE)"
  done
}

apply_flags() {
  local i key
  for i in "${!FLAG_KEYS[@]}"; do
    key=${FLAG_KEYS[$i]}
    OVR[$key]=${FLAG_VALUES[$i]}
    OVR_CHANGES+=("$key=${FLAG_VALUES[$i]}"$'\t'"set by deploy.sh ${FLAG_NAMES[$i]}")
    # The launcher refuses both thresholds at once: a new one replaces the other.
    case $key in
      WENMO_LAUNCHER_THRESHOLD_MIB) [[ ${OVR[WENMO_LAUNCHER_THRESHOLD_RATIO]+set} ]] &&
        { unset 'OVR[WENMO_LAUNCHER_THRESHOLD_RATIO]'; OVR_DISABLE+=(WENMO_LAUNCHER_THRESHOLD_RATIO); } ;;
      WENMO_LAUNCHER_THRESHOLD_RATIO) [[ ${OVR[WENMO_LAUNCHER_THRESHOLD_MIB]+set} ]] &&
        { unset 'OVR[WENMO_LAUNCHER_THRESHOLD_MIB]'; OVR_DISABLE+=(WENMO_LAUNCHER_THRESHOLD_MIB); } ;;
    esac
  done
  return 0
}

# The settings the service will see: generated, then the override file on top.
resolve_settings() {
  build_settings
  if [[ ${OVR[WENMO_LAUNCHER_THRESHOLD_MIB]+set} && ${OVR[WENMO_LAUNCHER_THRESHOLD_RATIO]+set} ]]; then
    die "$OVR_FILE sets both WENMO_LAUNCHER_THRESHOLD_MIB and WENMO_LAUNCHER_THRESHOLD_RATIO" \
      "the launcher takes one of them: delete the other line"
  fi
  EFF=()
  local key
  for key in "${GEN_KEYS[@]}"; do EFF[$key]=${GEN[$key]}; done
  if [[ ${OVR[WENMO_LAUNCHER_THRESHOLD_MIB]+set} || ${OVR[WENMO_LAUNCHER_THRESHOLD_RATIO]+set} ]]; then
    unset 'EFF[WENMO_LAUNCHER_THRESHOLD_MIB]' 'EFF[WENMO_LAUNCHER_THRESHOLD_RATIO]'
  fi
  for key in "${!OVR[@]}"; do EFF[$key]=${OVR[$key]}; done
  HOST=${EFF[WENMO_HOST]}
  PORT=${EFF[WENMO_PORT]}
  MODEL_DIR=${EFF[WENMO_MODEL_DIR]}
  DRAIN_S=${EFF[WENMO_LAUNCHER_DRAIN_S]:-30}
  [[ $PORT =~ ^[0-9]+$ ]] || die "WENMO_PORT=$PORT (from $OVR_FILE) is not a port number"
  [[ $DRAIN_S =~ ^[0-9]+([.][0-9]+)?$ ]] || die "WENMO_LAUNCHER_DRAIN_S=$DRAIN_S is not a number of seconds"
}

render_generated() {
  local key threshold_overridden=''
  [[ ${OVR[WENMO_LAUNCHER_THRESHOLD_MIB]+set} || ${OVR[WENMO_LAUNCHER_THRESHOLD_RATIO]+set} ]] && threshold_overridden=1
  cat <<EOF
# Wenmo service settings, generated by deploy.sh on $(date -u +%Y-%m-%dT%H:%MZ).
# Profile: $PROFILE.
#
# deploy.sh REWRITES this file on every run. Put your own values in
#   $OVR_FILE
# (same KEY=VALUE format, read after this file, so its values win; keys set there are left out here),
# then: $SRC/deploy.sh restart. A hand edit made here anyway is moved there by the next run.
# WENMO_<NAME> is the app's --<name> (python -m app serve --help); WENMO_LAUNCHER_<NAME> the
# launcher's (python -m launcher --help). The password is not here: see $CRED_FILE.
EOF
  for key in "${GEN_KEYS[@]}"; do
    printf '\n# %s\n' "${GEN_DOC[$key]}"
    if [[ ${OVR[$key]+set} ]]; then
      printf '# %s: set in wenmo.override.env (%s)\n' "$key" "${OVR[$key]}"
    elif [[ $threshold_overridden && $key == WENMO_LAUNCHER_THRESHOLD_* ]]; then
      printf '# %s: not used, a threshold is set in wenmo.override.env\n' "$key"
    else
      printf '%s=%s\n' "$key" "${GEN[$key]}"
    fi
  done
}

override_header() {
  cat <<EOF
# Your Wenmo settings: KEY=VALUE lines read after wenmo.env, so they win over the generated profile.
# deploy.sh never rewrites this file; it only adds or replaces the keys you give it as flags
# (--port, --host, --models-dir, --max-*, --threshold-mib, --drain-s, --set NAME=VALUE).
# After editing: $SRC/deploy.sh restart (or re-run deploy.sh).
# Example:
# WENMO_MAX_QUEUE=64
EOF
}

# The override file with OVR_CHANGES applied: a key is replaced where it is, or appended.
render_override() {
  local line key value why stamp
  stamp=$(date -u +%Y-%m-%d)
  local current=''
  if [[ -f $OVR_FILE ]]; then current=$(cat "$OVR_FILE"); else current=$(override_header); fi
  for key in "${OVR_DISABLE[@]}"; do
    current=$(awk -v k="$key" -v s="$stamp" '$0 ~ "^[[:space:]]*" k "=" { print "# (disabled by deploy.sh on " s ": the launcher takes one threshold) " $0; next } { print }' <<<"$current")
  done
  for line in "${OVR_CHANGES[@]}"; do
    key=${line%%=*}
    value=${line#*=}
    why=${value#*$'\t'}
    value=${value%%$'\t'*}
    if grep -qE "^[[:space:]]*$key=" <<<"$current"; then
      current=$(awk -v k="$key" -v v="$value" 'BEGIN { done = 0 } $0 ~ "^[[:space:]]*" k "=" { if (!done) print k "=" v; done = 1; next } { print }' <<<"$current")
    else
      current+=$'\n'"# $why ($stamp)"$'\n'"$key=$value"
    fi
  done
  printf '%s\n' "$current"
}

write_settings() {
  if [[ ! -f $OVR_FILE || ${#OVR_CHANGES[@]} -gt 0 || ${#OVR_DISABLE[@]} -gt 0 ]]; then
    render_override | put_file "$OVR_FILE" 0644 root
    local line
    for line in "${OVR_CHANGES[@]}"; do say "wenmo.override.env: ${line%%$'\t'*}"; done
  fi
  if ((!DRY_RUN)) && [[ -f $GEN_FILE && -f $GEN_WRITTEN ]] && ! cmp -s "$GEN_FILE" "$GEN_WRITTEN"; then
    run cp -p "$GEN_FILE" "$GEN_FILE.bak"
    say "your edited wenmo.env is kept as $GEN_FILE.bak"
  fi
  local generated
  generated=$(render_generated)
  put_file "$GEN_FILE" 0644 root <<<"$generated"
  ((DRY_RUN)) || printf '%s\n' "$generated" >"$GEN_WRITTEN"
}

# ds_config.json: updated with the code unless you edited it (then the new one is left beside it).
install_ds_config() {
  local new=$REPO/ds_config.json dist=$ETC/.ds_config.json.dist
  if [[ ! -f $DS_FILE ]]; then
    run install -m 0644 "$new" "$DS_FILE"
  elif [[ -f $dist ]] && cmp -s "$DS_FILE" "$dist"; then
    cmp -s "$new" "$DS_FILE" || run install -m 0644 "$new" "$DS_FILE"
  elif ! cmp -s "$new" "$DS_FILE"; then
    say "keeping your edited $DS_FILE; the new default is $DS_FILE.new"
    run install -m 0644 "$new" "$DS_FILE.new"
  fi
  cmp -s "$new" "$dist" || run install -m 0644 "$new" "$dist"
}

write_conf() {
  put_file "$CONF_FILE" 0644 root <<EOF
# deploy.sh's record of this installation (read by re-runs and by status/logs/stop/uninstall).
mode=$MODE
user=$SVC_USER
user_created=$USER_CREATED
demo=$DEMO
cpu=$CPU
python=$PY
state_dir=$STATE_DIR
installed=$(date -u +%Y-%m-%dT%H:%MZ)
EOF
  ((DRY_RUN)) || rm -f "$ETC/.deploy.conf.uninstalled"
}

# ---- install steps --------------------------------------------------------------------------------------
ensure_user() {
  USER_CREATED=${CONF[user_created]:-0}
  [[ ${CONF[user]:-} == "$SVC_USER" ]] || USER_CREATED=0
  if id -u "$SVC_USER" >/dev/null 2>&1; then
    say "service user: $SVC_USER (exists)"
  else
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "Wenmo service" "$SVC_USER"
    USER_CREATED=1
  fi
  # /dev/nvidia* are usually world-accessible; where they are not, their group grants access.
  local group
  if [[ -c /dev/nvidia0 ]] && ! [[ -r /dev/nvidia0 && -w /dev/nvidia0 && $(stat -c %a /dev/nvidia0) == *6 ]]; then
    group=$(stat -c %G /dev/nvidia0)
    [[ $group == root ]] || run usermod -aG "$group" "$SVC_USER"
  fi
  if ((DRY_RUN)) && ! id -u "$SVC_USER" >/dev/null 2>&1; then SVC_GROUP=$SVC_USER; return 0; fi
  SVC_GROUP=$(id -gn "$SVC_USER")
}

# as_user CMD...: run a command as the service user (when root).
as_user() {
  if [[ $(id -u) == 0 && $SVC_USER != root ]]; then
    setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups -- "$@"
  else
    "$@"
  fi
}

install_code() {
  local new=$PREFIX/src.new old=$PREFIX/src.old item items=()
  for item in app launcher bench deploy.sh ds_config.json requirements.txt pyproject.toml README.md; do
    [[ -e $REPO/$item ]] && items+=("$item")
  done
  if ((DRY_RUN)); then
    say "would copy ${items[*]} from $REPO to $SRC (replacing the old copy in one rename)"
    return 0
  fi
  rm -rf "$new" "$old"
  mkdir -p "$new"
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - "${items[@]}" | tar -C "$new" --no-same-owner -xf -
  chmod -R u=rwX,go=rX "$new"
  [[ -d $SRC ]] && mv "$SRC" "$old"
  mv "$new" "$SRC"
  rm -rf "$old"
  say "code: ${items[*]} -> $SRC"
}

requirements_hash() {
  { cat "$REPO/requirements.txt"; python_version "$PY"; printf '%s\n' "${WENMO_DEPLOY_PIP_ARGS:-}"; } |
    sha256sum | cut -d' ' -f1
}

venv_state() {  # current | stale | missing
  if [[ ! -x $VENV/bin/python ]]; then printf 'missing'; return 0; fi
  if [[ $(cat "$VENV/.wenmo-requirements" 2>/dev/null) == "$(requirements_hash)" ]] &&
    "$VENV/bin/python" -c '' 2>/dev/null; then
    printf 'current'
  else
    printf 'stale'
  fi
}

install_venv() {
  local state pip_args=() torch_req
  state=$(venv_state)
  if [[ $state == current ]]; then
    say "virtualenv $VENV is up to date with requirements.txt (reused)"
    return 0
  fi
  read -r -a pip_args <<<"${WENMO_DEPLOY_PIP_ARGS:-}"
  torch_req=$(grep -E '^torch==' "$REPO/requirements.txt" || true)
  [[ -n $torch_req ]] || die "requirements.txt pins no torch==VERSION"
  if [[ $state == stale && $(python_version "$VENV/bin/python" || true) != "$(python_version "$PY")" ]]; then
    say "the virtualenv was built with another Python: rebuilding it"
    run rm -rf "$VENV"
  fi
  [[ -x $VENV/bin/python ]] || run "$PY" -m venv "$VENV"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore DS_BUILD_OPS=0
  say "installing the Python packages (torch is large, ~3 GB with its CUDA libraries: a few minutes)"
  run "$VENV/bin/python" -m pip install "${pip_args[@]}" --upgrade pip ||
    warn "could not upgrade pip; going on with the one the virtualenv has"
  # torch first: deepspeed is a source package whose build imports torch (hence --no-build-isolation).
  run "$VENV/bin/python" -m pip install "${pip_args[@]}" setuptools wheel "$torch_req" ||
    die "pip could not install $torch_req (see pip's message above)" \
      "check the network to PyPI and re-run (finished downloads are cached); WENMO_DEPLOY_PIP_ARGS adds pip options"
  run "$VENV/bin/python" -m pip install "${pip_args[@]}" --no-build-isolation -r "$REPO/requirements.txt" ||
    die "pip could not install requirements.txt (see pip's message above)" \
      "check the network to PyPI and re-run; WENMO_DEPLOY_PIP_ARGS adds pip options"
  ((DRY_RUN)) || requirements_hash >"$VENV/.wenmo-requirements"
}

verify_torch() {
  ((DRY_RUN)) && { say "would check that torch sees the GPU"; return 0; }
  local out rc=0
  out=$(cd "$SRC" && as_user "$VENV/bin/python" - "$CPU" 2>&1 <<'EOF'
import sys
import torch
want_gpu = sys.argv[1] != "1"
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}")
if want_gpu:
    if torch.version.cuda is None:
        sys.exit(4)
    if not torch.cuda.is_available():
        sys.exit(3)
    p = torch.cuda.get_device_properties(0)
    print(f"torch sees {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
import app.config, launcher.config  # noqa: E401,F401 - the code imports with this virtualenv
EOF
  ) || rc=$?
  case $rc in
    0) while IFS= read -r line; do say "$line"; done <<<"$out" ;;
    3) die "torch cannot see the GPU ($(head -n1 <<<"$out"); driver $GPU_DRIVER)" \
      "the driver is probably older than this CUDA build needs: upgrade it (sudo ubuntu-drivers install) and reboot," \
      "or run on the CPU: --cpu" ;;
    4) die "the installed torch is a CPU-only build ($(head -n1 <<<"$out"))" \
      "remove a CPU index from WENMO_DEPLOY_PIP_ARGS / pip.conf and re-run, or run on the CPU: --cpu" ;;
    *) die "the virtualenv does not work as user $SVC_USER: $(tail -n1 <<<"$out")" \
      "if $PY lives in a home directory (pyenv), the service user cannot run it: use --python /usr/bin/python3" ;;
  esac
}

model_id() {  # model_id ROLE: the effective model setting of a role (ModelScope id or local directory)
  case $1 in
    embed) printf '%s' "${EFF[WENMO_EMBED_MODEL]}" ;;
    cross) printf '%s' "${EFF[WENMO_CROSS_MODEL]}" ;;
    nlu) printf '%s' "${EFF[WENMO_NLU_MODEL]}" ;;
  esac
}

model_path() {  # model_path ID: where the service looks for it
  if [[ -d $1 ]]; then printf '%s' "$1"; else printf '%s' "$MODEL_DIR/$1"; fi
}

# Models whose download is not complete (ModelScope ids, not local directories): "role id" lines.
missing_models() {
  local role id
  for role in embed cross nlu; do
    id=$(model_id "$role")
    [[ -d $id || -f $MODEL_DIR/$id/.wenmo-complete ]] || printf '%s %s\n' "$role" "$id"
  done
}

download_models() {
  if [[ $DEMO == 1 ]]; then say "--demo: tiny models are built by the app at its first start; nothing to download"; return 0; fi
  local role id target todo
  todo=$(missing_models)
  for role in embed cross nlu; do
    id=$(model_id "$role")
    if [[ -d $id ]]; then say "$role model: local directory $id"
    elif ! grep -q "^$role " <<<"$todo"; then say "$role model: $id already in $MODEL_DIR"; fi
  done
  while read -r role id; do
    [[ -n $role ]] || continue
    target=$MODEL_DIR/$id
    say "$role model: downloading $id from ModelScope into $target"
    # The app's own resolver: the same layout and completion marker the service looks for
    # (in a dry run $SRC does not exist yet: the command is only printed).
    if ! (cd "$SRC" 2>/dev/null || ((DRY_RUN)); run "$VENV/bin/python" -c \
      'import sys; from app.engine.loading import resolve_model; print(resolve_model(sys.argv[1], sys.argv[2]))' \
      "$id" "$MODEL_DIR"); then
      die "downloading the $role model $id into $target failed (see the message above)" \
        "Re-run the same command to retry: files already downloaded are kept and partial ones resume." \
        "Without network to modelscope.cn: copy the model directory from another machine to $target," \
        "create the empty file $target/.wenmo-complete, and re-run (or point --models-dir at an existing copy)."
    fi
    if [[ $(id -u) == 0 ]]; then run chown -R "$SVC_USER:$SVC_GROUP" "$target"; fi
  done <<<"$todo"
  ((DRY_RUN)) && return 0
  # An existing copy (--models-dir) must be readable by the service user, or the service cannot start.
  for role in embed cross nlu; do
    target=$(model_path "$(model_id "$role")")
    as_user test -r "$target/config.json" -a -x "$target" ||
      die "the service user $SVC_USER cannot read the $role model in $target" \
        "give it access (e.g. chmod -R a+rX $target and the directories above it) and re-run"
  done
}

ensure_password() {
  if [[ -f $CRED_FILE && $OPT_ROTATE != 1 ]]; then
    say "password: kept ($CRED_FILE; --rotate-password makes a new one)"
  else
    local password
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    password=${password:0:24}
    printf '%s:%s\n' "$HTTP_USER" "$password" | put_file "$CRED_FILE" 0600 "$(id -un)" secret
    if ((!DRY_RUN)); then
      if [[ $OPT_ROTATE == 1 ]]; then say "password: rotated (the new one is in $CRED_FILE)"
      else say "password: created in $CRED_FILE"; fi
    fi
  fi
  # systemd before 247 has no credentials: the service reads the password from a root-only env file.
  if [[ $MODE == systemd && ${SYSTEMD_VERSION:-999} -lt 247 ]]; then
    if ((DRY_RUN)); then say "would write $CRED_DIR/wenmo-auth.env (0600): WENMO_AUTH from $CRED_FILE"; return 0; fi
    printf 'WENMO_AUTH=%s\n' "$(head -n1 "$CRED_FILE")" | put_file "$CRED_DIR/wenmo-auth.env" 0600 root secret
  fi
  return 0
}

# ---- the service ----------------------------------------------------------------------------------------
stop_timeout_s() { awk -v d="$DRAIN_S" 'BEGIN { printf "%d", d + 30 + 0.999 }'; }

render_unit() {
  local demo_arg='' cred_lines
  [[ $DEMO == 1 ]] && demo_arg=' --demo'
  if ((${SYSTEMD_VERSION:-999} >= 251)); then
    cred_lines="LoadCredential=wenmo-auth:$CRED_FILE
Environment=WENMO_AUTH_FILE=%d/wenmo-auth"
  elif ((${SYSTEMD_VERSION:-999} >= 247)); then
    cred_lines="LoadCredential=wenmo-auth:$CRED_FILE
Environment=WENMO_AUTH_FILE=/run/credentials/%n/wenmo-auth"
  else
    cred_lines="EnvironmentFile=$CRED_DIR/wenmo-auth.env"
  fi
  cat <<EOF
# Wenmo 文墨, written by deploy.sh; re-run deploy.sh to change it (edits here are overwritten).
# Settings: $GEN_FILE and $OVR_FILE (yours). Extra unit settings: systemctl edit $SERVICE
[Unit]
Description=Wenmo Chinese text semantics (launcher watchdog + web app on port $PORT)
Documentation=file://$SRC/README.md
After=network-online.target
Wants=network-online.target
# systemd's limit on top of the launcher's own restart budget (it exits 3 when the app keeps failing)
StartLimitIntervalSec=900
StartLimitBurst=3

[Service]
Type=simple
User=$SVC_USER
Group=$SVC_GROUP
WorkingDirectory=$SRC
StateDirectory=$SERVICE
StateDirectoryMode=0750
Environment=HOME=$STATE_DIR
Environment=PYTHONUNBUFFERED=1
Environment=LANG=C.UTF-8
EnvironmentFile=$GEN_FILE
EnvironmentFile=-$OVR_FILE
# The password reaches the service as a credential file, never on a command line or in the environment.
$cred_lines
ExecStart=$VENV/bin/python -m launcher$demo_arg
Restart=on-failure
RestartSec=10
# 2 = invalid configuration: restarting cannot fix it
RestartPreventExitStatus=2
KillMode=control-group
# longer than the drain (WENMO_LAUNCHER_DRAIN_S=$DRAIN_S) so in-flight requests finish
TimeoutStopSec=$(stop_timeout_s)
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes
SyslogIdentifier=$SERVICE

[Install]
WantedBy=multi-user.target
EOF
}

# Process ids whose command line starts with the given words (exact argv prefix).
pids_running() {
  local want proc cmd
  want=$(printf '%s\x1f' "$@")
  for proc in /proc/[0-9]*; do
    cmd=$(tr '\0' '\037' 2>/dev/null <"$proc/cmdline") || continue
    [[ $cmd == "$want"* ]] && printf '%s\n' "${proc#/proc/}"
  done
  return 0
}

background_pid() {  # the launcher's pid when the pid file names a live launcher of this prefix
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  local all
  all=$(pids_running "$VENV/bin/python" -m launcher)
  grep -qx "$pid" <<<"$all" || return 1
  printf '%s\n' "$pid"
}

service_running() {
  case ${CONF[mode]:-$MODE} in
    systemd) command -v systemctl >/dev/null && systemctl is-active --quiet "$SERVICE" 2>/dev/null ;;
    *) background_pid >/dev/null ;;
  esac
}

stop_background() {
  local pid waited=0 limit left
  limit=$(stop_timeout_s)
  if ((DRY_RUN)); then
    if pid=$(background_pid); then say "would stop the running launcher (pid $pid): SIGTERM, SIGKILL after $limit s"; fi
    return 0
  fi
  if pid=$(background_pid); then
    run kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && ((waited < limit)); do sleep 1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      warn "the launcher did not stop within $limit s: killing it"
      run kill -KILL "$pid" || true
    fi
    say "stopped the launcher (pid $pid)"
  fi
  # An app left behind by a killed launcher still holds the port and the GPU.
  left=$(pids_running "$VENV/bin/python" -m app serve)
  if [[ -n $left ]]; then
    warn "stopping leftover app process(es): $(tr '\n' ' ' <<<"$left")"
    # shellcheck disable=SC2086 # one pid per word
    run kill -TERM $left || true
    sleep 2
    left=$(pids_running "$VENV/bin/python" -m app serve)
    # shellcheck disable=SC2086
    [[ -z $left ]] || run kill -KILL $left || true
  fi
  ((DRY_RUN)) || rm -f "$PID_FILE"
}

# The environment of the background launcher: what systemd would give it.
background_env() {
  declare -A env=()
  read_env_file "$GEN_FILE" env
  read_env_file "$OVR_FILE" env
  local key
  printf '%s\n' "HOME=$STATE_DIR" "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "LANG=C.UTF-8" "PYTHONUNBUFFERED=1" "WENMO_AUTH_FILE=$RUN_CRED"
  for key in "${!env[@]}"; do printf '%s=%s\n' "$key" "${env[$key]}"; done
}

start_background() {
  local envv=() cmd pid
  mapfile -t envv < <(background_env)
  cmd=("$VENV/bin/python" -m launcher)
  [[ $DEMO == 1 ]] && cmd+=(--demo)
  if ((DRY_RUN)); then
    say "would start in the background as $SVC_USER, in $SRC, logging to $LOG_FILE: $(quote "${cmd[@]}")"
    return 0
  fi
  # The service user's own copy of the password (like systemd's credentials directory).
  install -m 0600 -o "$SVC_USER" -g "$SVC_GROUP" "$CRED_FILE" "$RUN_CRED" 2>/dev/null ||
    install -m 0600 "$CRED_FILE" "$RUN_CRED"
  if [[ $(id -u) == 0 && $SVC_USER != root ]]; then
    cmd=(setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups -- env -i "${envv[@]}" "${cmd[@]}")
  else
    cmd=(env -i "${envv[@]}" "${cmd[@]}")
  fi
  printf '    + %s >>%s 2>&1 &\n' "$(quote "${cmd[@]:0:4}") … python -m launcher" "$LOG_FILE"
  # A new session: the launcher outlives this shell and its terminal.
  # fd 9 is the deploy lock: the launcher must not hold it.
  (cd "$SRC" && exec setsid "${cmd[@]}" >>"$LOG_FILE" 2>&1 </dev/null 9>&-) &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  sleep 1
  kill -0 "$pid" 2>/dev/null || die "the launcher exited at once; the end of $LOG_FILE:" "$(tail -n 20 "$LOG_FILE")"
  say "launcher started in the background (pid $pid, log $LOG_FILE, pid file $PID_FILE)"
}

install_service() {
  if [[ $MODE == systemd ]]; then
    # Switching from a background install: stop that one first.
    [[ $PREV_MODE == background ]] && stop_background
    render_unit | put_file "$UNIT_FILE" 0644 root
    run systemctl daemon-reload
    run systemctl enable "$SERVICE.service"
    run systemctl reset-failed "$SERVICE.service" 2>/dev/null || true
    run systemctl restart "$SERVICE.service"
  else
    if [[ $PREV_MODE == systemd ]] && command -v systemctl >/dev/null && [[ -f $UNIT_FILE ]]; then
      run systemctl disable --now "$SERVICE.service" || true
    fi
    stop_background
    start_background
  fi
}

http_status() {  # http_status URL [user:password-file]: the HTTP status, 000 when nothing answers
  "${PY:-python3}" - "$@" <<'EOF'
import base64, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    with open(sys.argv[2], encoding="utf-8") as f:
        token = base64.b64encode(f.readline().strip().encode()).decode()
    req.add_header("Authorization", "Basic " + token)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

wait_ready() {
  local url code last=-1 waited=0 state
  url="http://$(probe_host "$HOST"):$PORT/readyz"
  if ((DRY_RUN)); then say "would wait up to $OPT_WAIT_S s for $url to answer 200"; return 0; fi
  say "waiting for $url (loading the models)"
  while :; do
    code=$(http_status "$url")
    [[ $code == 200 ]] && { say "ready after $waited s"; return 0; }
    if [[ $MODE == systemd ]]; then
      state=$(systemctl is-active "$SERVICE" 2>/dev/null || true)
      if [[ $state == failed || $state == inactive ]]; then
        journalctl -u "$SERVICE" -n 40 --no-pager >&2 || true
        die "the service stopped ($state) before it was ready; its last log lines are above" \
          "full log: $0 logs; fix the cause and re-run $0"
      fi
    elif ! background_pid >/dev/null; then
      tail -n 40 "$LOG_FILE" >&2 || true
      die "the launcher stopped before the app was ready; the end of $LOG_FILE is above" \
        "fix the cause and re-run $0"
    fi
    if ((waited >= OPT_WAIT_S)); then
      die "not ready after $OPT_WAIT_S s (last answer: $code)" \
        "it may still be loading: watch $0 logs -f, then $0 status; --wait-s waits longer"
    fi
    if ((waited - last >= 15)); then say "... $waited s, /readyz: $code"; last=$waited; fi
    sleep 2
    waited=$((waited + 2))
  done
}

summary() {
  local addr local_url
  addr=$(hostname -I 2>/dev/null | awk '{print $1}' || true)
  local_url="http://$(probe_host "$HOST"):$PORT/"
  printf '\nWenmo is %s (took %s).\n' "$( ((DRY_RUN)) && printf 'not installed: this was a dry run' || printf 'running and ready')" "$(elapsed)"
  case $HOST in
    0.0.0.0 | :: | '[::]') printf '  URL        http://%s:%s/   (this machine: %s)\n' "${addr:-<this machine>}" "$PORT" "$local_url"
      printf '             open TCP port %s in the cloud firewall / security group to reach it from outside\n' "$PORT" ;;
    *) printf '  URL        %s\n' "$local_url" ;;
  esac
  printf '  user       %s\n' "$HTTP_USER"
  printf '  password   %scut -d: -f2- %s\n' "$([[ $(id -u) == 0 ]] && printf 'sudo ')" "$CRED_FILE"
  # shellcheck disable=SC2016 # a command for the reader to run, not to expand here
  printf '  try it     curl -u "%s:$(%scut -d: -f2- %s)" %sv1/embeddings -H "Content-Type: application/json" -d '"'"'{"input": ["你好"]}'"'"'\n' \
    "$HTTP_USER" "$([[ $(id -u) == 0 ]] && printf 'sudo ')" "$CRED_FILE" "$local_url"
  printf '  settings   %s (generated) and %s (yours)\n' "$GEN_FILE" "$OVR_FILE"
  printf '  manage     %s/deploy.sh status | logs [-f] | restart | stop | uninstall\n' "$SRC"
}

# ---- commands -------------------------------------------------------------------------------------------
cmd_install() {
  check_repo
  printf 'Wenmo deploy%s: prefix %s\n' "$( ((DRY_RUN)) && printf ' (dry run: nothing is changed)')" "$PREFIX"
  load_conf
  PREV_MODE=${CONF[mode]:-}
  MODE=${OPT_MODE:-${CONF[mode]:-systemd}}
  DEMO=${OPT_DEMO:-${CONF[demo]:-0}}
  CPU=${OPT_CPU:-${CONF[cpu]:-0}}
  SVC_USER=${OPT_USER:-${CONF[user]:-}}
  if [[ -z $SVC_USER ]]; then
    if [[ $(id -u) == 0 ]]; then SVC_USER=wenmo; else SVC_USER=$(id -un); fi
  fi
  if [[ $MODE == systemd ]]; then STATE_DIR=/var/lib/$SERVICE; else STATE_DIR=$PREFIX/state; fi
  local cpu_chosen=$CPU

  step "checking this machine"
  check_os
  check_privileges
  check_writable "$PREFIX" "the prefix"
  check_python
  check_gpu
  check_systemd
  OLD=()
  read_env_file "$GEN_FILE" OLD
  read_env_file "$OVR_FILE" OLD
  OVR=()
  read_env_file "$OVR_FILE" OVR
  OVR_CHANGES=() OVR_DISABLE=()
  plan_migration
  apply_flags
  resolve_settings
  [[ $MODEL_DIR == /* ]] || die "WENMO_MODEL_DIR=$MODEL_DIR must be an absolute path"
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then check_writable "$MODEL_DIR" "the models directory"; fi
  check_port
  check_disk
  say "profile: $PROFILE"

  step "installing into $PREFIX"
  create_writable "$PREFIX" "the prefix"
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then create_writable "$MODEL_DIR" "the models directory"; fi
  if ((!DRY_RUN)); then
    exec 9>"$PREFIX/.deploy.lock"
    flock -n 9 || die "another deploy.sh is working on $PREFIX" "wait for it to finish"
    touch "$MARKER"
  fi
  ensure_user
  run mkdir -p "$ETC" "$RUN_DIR" "$LOG_DIR"
  run install -d -m 0700 "$CRED_DIR"
  if [[ $DEMO != 1 && ! -d $MODEL_DIR ]]; then run install -d -m 0755 "$MODEL_DIR"; fi
  if [[ $DEMO != 1 && $(id -u) == 0 && $MODEL_DIR == "$PREFIX/models" ]]; then
    run chown "$SVC_USER:$SVC_GROUP" "$MODEL_DIR"
  fi
  if [[ $MODE == background ]]; then
    run install -d -m 0750 "$STATE_DIR"
    [[ $(id -u) == 0 ]] && run chown -R "$SVC_USER:$SVC_GROUP" "$STATE_DIR"
  fi
  install_code
  install_venv
  verify_torch

  step "configuring (profile: $PROFILE)"
  install_ds_config
  write_settings
  CPU=$cpu_chosen  # remember the choice, not the --demo fallback
  write_conf

  step "models"
  download_models

  step "password"
  ensure_password

  step "starting the service ($([[ $MODE == systemd ]] && printf 'systemd unit %s' "$SERVICE.service" || printf 'background process'))"
  install_service
  wait_ready
  summary
}

# Subcommands act on an existing installation.
need_install() {
  load_conf
  if [[ ! -f $CONF_FILE ]]; then
    die "no Wenmo installation in $PREFIX ($CONF_FILE is missing)" "give its --prefix, or install: sudo $0"
  fi
  MODE=${CONF[mode]:-systemd} SVC_USER=${CONF[user]:-wenmo} DEMO=${CONF[demo]:-0}
  STATE_DIR=${CONF[state_dir]:-$PREFIX/state} PY=${CONF[python]:-python3}
  SVC_GROUP=$(id -gn "$SVC_USER" 2>/dev/null || printf '%s' "$SVC_USER")
  declare -A files=()
  read_env_file "$GEN_FILE" files
  read_env_file "$OVR_FILE" files
  HOST=${files[WENMO_HOST]:-0.0.0.0} PORT=${files[WENMO_PORT]:-7860} DRAIN_S=${files[WENMO_LAUNCHER_DRAIN_S]:-30}
  if [[ $MODE == systemd && $(id -u) != 0 && $COMMAND != status && $COMMAND != logs ]]; then
    die "$COMMAND needs root" "run: sudo $0 $COMMAND"
  fi
}

cmd_status() {
  need_install
  local code rc=0
  if [[ $MODE == systemd ]]; then
    systemctl status "$SERVICE" --no-pager -n 0 || true
    systemctl is-active --quiet "$SERVICE" || rc=3
  else
    local pid
    if pid=$(background_pid); then printf 'launcher: running in the background, pid %s (log %s)\n' "$pid" "$LOG_FILE"
    else printf 'launcher: not running (no live pid in %s)\n' "$PID_FILE"; rc=3; fi
  fi
  code=$(http_status "http://$(probe_host "$HOST"):$PORT/readyz")
  printf 'readiness: GET http://%s:%s/readyz -> %s\n' "$(probe_host "$HOST")" "$PORT" "$([[ $code == 000 ]] && printf 'no answer' || printf 'HTTP %s' "$code")"
  if [[ -r $STATE_DIR/launcher-status.json ]]; then
    printf 'launcher status (%s):\n' "$STATE_DIR/launcher-status.json"
    cat "$STATE_DIR/launcher-status.json"
    printf '\n'
  fi
  if ((rc == 0)) && [[ $code != 200 ]]; then rc=1; fi
  return "$rc"
}

cmd_logs() {
  need_install
  if [[ $MODE == systemd ]]; then
    if ((OPT_FOLLOW)); then exec journalctl -u "$SERVICE" -n 200 -f; fi
    exec journalctl -u "$SERVICE" -n 200 --no-pager
  fi
  [[ -f $LOG_FILE ]] || die "no log file yet: $LOG_FILE"
  if ((OPT_FOLLOW)); then exec tail -n 200 -F "$LOG_FILE"; fi
  exec tail -n 200 "$LOG_FILE"
}

cmd_stop() {
  need_install
  if [[ $MODE == systemd ]]; then
    run systemctl stop "$SERVICE.service"
    say "stopped. It is still enabled and starts again at boot (sudo systemctl disable $SERVICE, or $0 uninstall)"
  else
    stop_background
    say "stopped"
  fi
}

cmd_start() {
  need_install
  if [[ $MODE == systemd ]]; then
    run systemctl reset-failed "$SERVICE.service" 2>/dev/null || true
    if [[ $COMMAND == restart ]]; then run systemctl restart "$SERVICE.service"; else run systemctl start "$SERVICE.service"; fi
  else
    if [[ $COMMAND == restart ]]; then stop_background; fi
    if background_pid >/dev/null; then say "already running (pid $(background_pid))"; else start_background; fi
  fi
  wait_ready
  say "ready: http://$(probe_host "$HOST"):$PORT/ (took $(elapsed))"
}

cmd_uninstall() {
  local kept=$ETC/.deploy.conf.uninstalled
  load_conf
  # After a plain uninstall the record is kept aside, so that a later --purge knows what to remove.
  [[ -f $CONF_FILE ]] || read_env_file "$kept" CONF
  if [[ ! -f $CONF_FILE && ! -f $kept ]]; then
    die "no Wenmo installation in $PREFIX ($CONF_FILE is missing)" "give its --prefix"
  fi
  MODE=${CONF[mode]:-systemd} SVC_USER=${CONF[user]:-wenmo} STATE_DIR=${CONF[state_dir]:-$PREFIX/state}
  DRAIN_S=30
  [[ $(id -u) == 0 || $MODE == background ]] || die "uninstall needs root" "run: sudo $0 uninstall"
  if [[ $MODE == systemd ]] && command -v systemctl >/dev/null && [[ -f $UNIT_FILE ]]; then
    run systemctl disable --now "$SERVICE.service" || true
    run rm -f "$UNIT_FILE"
    run systemctl daemon-reload || true
  fi
  stop_background
  [[ -f $CONF_FILE ]] && run mv "$CONF_FILE" "$kept"
  run rm -rf "$VENV" "$SRC" "$RUN_DIR" "$LOG_DIR" "$GEN_FILE" "$GEN_WRITTEN" "$GEN_FILE.bak" \
    "$DS_FILE.new" "$ETC/.ds_config.json.dist" "$PREFIX/.deploy.lock"
  [[ $MODE == background ]] && run rm -rf "$STATE_DIR"
  if ((OPT_PURGE)); then
    declare -A files=()
    read_env_file "$OVR_FILE" files
    if [[ -n ${files[WENMO_MODEL_DIR]:-} && ${files[WENMO_MODEL_DIR]} != "$PREFIX"/* ]]; then
      say "not deleting your models directory ${files[WENMO_MODEL_DIR]} (outside $PREFIX)"
    fi
    run rm -rf "$PREFIX/models" "$CRED_DIR" "$OVR_FILE" "$DS_FILE" "$kept"
    [[ $STATE_DIR == "/var/lib/$SERVICE" || $STATE_DIR == "$PREFIX"/* ]] && run rm -rf "$STATE_DIR"
    if [[ ${CONF[user_created]:-0} == 1 ]] && id -u "$SVC_USER" >/dev/null 2>&1; then run userdel "$SVC_USER" || true; fi
    run rm -f "$MARKER"
    run rmdir "$ETC" "$PREFIX" 2>/dev/null || true
    say "purged $PREFIX"
  else
    local item kept_items=()
    for item in "$PREFIX/models" "$CRED_FILE" "$OVR_FILE" "$DS_FILE"; do [[ -e $item ]] && kept_items+=("$item"); done
    say "removed the service, the code and the virtualenv"
    ((${#kept_items[@]} == 0)) || say "kept (--purge deletes them too): ${kept_items[*]}"
  fi
}

cmd_profile() {
  GPU_NAME=$OPT_GPU_NAME GPU_MIB=${OPT_GPU_MIB:-0} CPU=${OPT_CPU:-0} GPU_DRIVER='' GPU_COUNT=0
  if [[ $CPU != 1 && -z $OPT_GPU_MIB ]]; then
    detect_gpu || die "no nvidia-smi: give --gpu-name NAME --gpu-mib MIB, or --cpu"
    [[ -n $OPT_GPU_NAME ]] && GPU_NAME=$OPT_GPU_NAME
  fi
  [[ -n $GPU_NAME ]] || GPU_NAME="GPU"
  GEN_KEYS=() GEN=() GEN_DOC=()
  profile "$GPU_NAME" "$GPU_MIB" "$CPU"
  printf '# profile: %s\n' "$PROFILE"
  local key
  for key in "${GEN_KEYS[@]}"; do printf '# %s\n%s=%s\n' "${GEN_DOC[$key]}" "$key" "${GEN[$key]}"; done
}

main() {
  ORIGINAL_ARGS=("$@")
  parse_args "$@"
  set_paths "${OPT_PREFIX:-$(default_prefix)}"
  case $COMMAND in
    install) cmd_install ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    start | restart) cmd_start ;;
    stop) cmd_stop ;;
    uninstall) cmd_uninstall ;;
    profile) cmd_profile ;;
  esac
}

main "$@"
