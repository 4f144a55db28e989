#!/usr/bin/env bash
# deploy.sh — one command from a fresh Debian/Ubuntu VM to a running, supervised, password-protected Wenmo.
#
#   ./deploy.sh [--demo]          install, or upgrade in place; start; wait until ready (root, or sudo)
#   ./deploy.sh status | logs [-f] | start | stop | restart | uninstall [--purge] | profile
#   ./deploy.sh --help            every option (README.md "Deploying" has the details)
#
# Only what must be shell lives here: the checks, the service user, the virtualenv, the unit file, the password,
# waiting for ready. The rest is Python: `python -m app profile` tunes for the GPU and writes the settings files
# (app/hostprofile.py, app/settingsfiles.py); without systemd the launcher is the process manager (its
# --pid-file and --log-file). Safe to re-run: the virtualenv is reused while requirements.txt is unchanged, the
# password is kept, your wenmo.override.env is never rewritten. It stops with a message at the first problem.
#
# Test hooks (environment): WENMO_DEPLOY_NVIDIA_SMI (nvidia-smi to run), WENMO_DEPLOY_OS_RELEASE
# (os-release file to read), WENMO_DEPLOY_PIP_ARGS (extra pip arguments, e.g. an index or --find-links).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly REPO SERVICE=wenmo HTTP_USER=wenmo MIN_PYTHON=3.10
# PyPI's torch is a CUDA 12+ build: no driver older than branch 525 can run it (after installing, deploy.sh checks
# that torch really sees the GPU).
readonly MIN_DRIVER_MAJOR=525
# Without a GPU, torch comes from PyTorch's CPU index: ~200 MB instead of ~3 GB of CUDA libraries.
readonly CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Disk needed, MiB: the three checkpoints (~3.4 GB), the virtualenv (torch with CUDA libraries, or not).
readonly NEED_MODELS_MIB=5120 NEED_VENV_GPU_MIB=10240 NEED_VENV_CPU_MIB=4096
readonly STEPS=6

# ---- output ---------------------------------------------------------------------------------------------------
STARTED_AT=$SECONDS STEP=0 DRY_RUN=0
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
elapsed() { local s=$((SECONDS - STARTED_AT)); printf '%d min %d s' $((s / 60)) $((s % 60)); }
quote() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }
is_root() { [[ $(id -u) == 0 ]]; }
# `sudo ` in a command to run as root, for a user who is not root (as root it would only fail in a container).
sudo_() { is_root || printf 'sudo '; }
# `sudo ` in the commands the summary shows, when root came through sudo: the reader is a user, the files root's.
sudo_reader() { if is_root && [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then printf 'sudo '; fi; }
# Every change to the system goes through run / put_file, so --dry-run can print it instead.
run() {
  if ((DRY_RUN)); then printf '    would run: %s\n' "$(quote "$@")"; return 0; fi
  printf '    + %s\n' "$(quote "$@")"
  "$@"
}
put_file() {  # put_file PATH MODE [secret]: stdin to PATH atomically; `secret` hides the content in a dry run
  local path=$1 mode=$2 content tmp
  content=$(cat)
  if ((DRY_RUN)); then
    printf '    would write %s (mode %s, owner %s)\n' "$path" "$mode" "$(id -un)"
    if [[ ${3:-} == secret ]]; then printf '    (content not shown: it is a secret)\n'
    else printf -- '----- %s -----\n%s\n----- end of %s -----\n' "$path" "$content" "$path"; fi
    return 0
  fi
  tmp=$(mktemp "$path.XXXXXX")
  chmod "$mode" "$tmp"
  printf '%s\n' "$content" >"$tmp"
  mv -f "$tmp" "$path"
}

# ---- options --------------------------------------------------------------------------------------------------
usage() {
  cat <<'EOF'
Usage: ./deploy.sh [COMMAND] [OPTIONS]        (as root, or through sudo)

Commands:
  install              (default) check the machine, install or upgrade, configure, download the
                       models, create the password once, start the service, wait until it is ready
  status               running and ready? exit 0 ready, 1 running but not ready, 3 stopped, 4 not installed
  logs [-f]            the last 200 log lines (-f: follow)
  start | stop | restart
  uninstall [--purge]  remove the service, code and virtualenv; keeps models, password, state and
                       wenmo.override.env unless --purge
  profile              print the settings for this machine's GPU, or the CPU (python -m app profile)

Install options (remembered for re-runs: flags that set WENMO_* values go to wenmo.override.env,
--cpu/--demo/--no-systemd/--user/--python to <prefix>/etc/deploy.conf):
  --prefix DIR         where everything goes (default /opt/wenmo)
  --port N             port to serve on (default 7860)
  --host ADDR          address to bind (default 0.0.0.0: every interface)
  --user NAME          unprivileged account the service runs as (default wenmo, created if missing)
  --models-dir DIR     ModelScope cache; an existing copy there is used as is (default <prefix>/models)
  --cpu | --gpu        run on the CPU (no NVIDIA GPU needed) | back to the GPU
  --demo | --no-demo   tiny offline models: a first look without network or GPU (outputs meaningless)
  --no-systemd | --systemd
                       the launcher as a background process (pid file + log file) | a systemd unit;
                       default: systemd where it runs (PID 1), else --no-systemd (containers)
  --rotate-password    make a new password (otherwise the first one is kept forever)
  --dry-run            print every action, the settings and the unit file; change nothing
  --python PATH        Python 3.10+ to build the virtualenv from (default /usr/bin/python3)
  --wait-s N           how long to wait for /readyz (default 900)
  --max-batch-tokens N, --max-batch-size N, --max-length N, --max-concurrent N,
  --threshold-mib N, --drain-s N
                       override the profile (WENMO_MAX_*, WENMO_LAUNCHER_THRESHOLD_MIB,
                       WENMO_LAUNCHER_DRAIN_S)
  --set NAME=VALUE     any other app/launcher setting, e.g. --set WENMO_MAX_QUEUE=64
  --purge              with uninstall: also delete models, password, settings, state and the user
  -f, --follow         with logs: follow
  --gpu-spec 'NAME, MIB, CC'
                       with profile: the GPU to print the profile for (repeatable)
  -h, --help           this text

Environment: WENMO_DEPLOY_PIP_ARGS="..." adds arguments to every pip install (an index, a cache).
EOF
}

COMMAND=install OPT_PREFIX='' OPT_USER='' OPT_PYTHON='' OPT_CPU='' OPT_DEMO='' OPT_MODE=''
OPT_ROTATE=0 OPT_PURGE=0 OPT_FOLLOW=0 OPT_WAIT_S=900
SETS=() GPU_SPECS=()
need_int() { [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 needs a whole number, got '$2'"; }

parse_args() {
  local arg value
  while (($#)); do
    arg=$1
    if [[ $arg == --*=* ]]; then set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; arg=$1; fi
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
        --max-batch-size | --max-length | --max-concurrent | --threshold-mib | --drain-s | --set | --gpu-spec)
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
            SETS+=("WENMO_PORT=$value") ;;
          --host) [[ -n $value && $value != *[[:space:]/@]* ]] || usage_error "--host: '$value' is not an address"
            SETS+=("WENMO_HOST=$value") ;;
          --models-dir) [[ $value == /* ]] || usage_error "--models-dir needs an absolute path, got '$value'"
            SETS+=("WENMO_MODEL_DIR=${value%/}") ;;
          --threshold-mib) need_int "$arg" "$value"; SETS+=("WENMO_LAUNCHER_THRESHOLD_MIB=$value") ;;
          --drain-s) need_int "$arg" "$value"; SETS+=("WENMO_LAUNCHER_DRAIN_S=$value") ;;
          --max-*) need_int "$arg" "$value"; value="${arg#--}=$value"; value=${value//-/_}
            SETS+=("WENMO_${value^^}") ;;
          --set)
            [[ $value =~ ^(WENMO_[A-Z0-9_]+)=(.*)$ ]] || usage_error "--set needs WENMO_NAME=VALUE, got '$value'"
            [[ ${BASH_REMATCH[1]} != WENMO_AUTH && ${BASH_REMATCH[1]} != WENMO_AUTH_FILE ]] ||
              usage_error "the password is not a setting: it lives in the credential file (--rotate-password)"
            SETS+=("$value") ;;
          --gpu-spec) GPU_SPECS+=("$value") ;;
        esac ;;
      *) usage_error "unknown option or command '$arg'" ;;
    esac
    shift
  done
}

# ---- paths and the record of an installation ------------------------------------------------------------------
set_paths() {
  PREFIX=$1 ETC=$1/etc VENV=$1/venv SRC=$1/src RUN_DIR=$1/run LOG_DIR=$1/log
  GEN_FILE=$ETC/wenmo.env OVR_FILE=$ETC/wenmo.override.env CONF_FILE=$ETC/deploy.conf DS_FILE=$ETC/ds_config.json
  CRED_DIR=$ETC/credentials CRED_FILE=$ETC/credentials/wenmo-auth
  PID_FILE=$RUN_DIR/wenmo.pid RUN_CRED=$RUN_DIR/wenmo-auth LOG_FILE=$LOG_DIR/wenmo.log
  UNIT_FILE=/etc/systemd/system/$SERVICE.service
}

default_prefix() {  # run from an installed copy (<prefix>/src/deploy.sh), its installation is the default
  if [[ -f $REPO/../etc/deploy.conf ]]; then (cd "$REPO/.." && pwd); else printf '/opt/wenmo\n'; fi
}

# read_env_file FILE ARRAY: KEY=VALUE lines (comments skipped, one level of quotes removed, last wins).
read_env_file() {
  local line key val
  local -n into=$2
  [[ -r $1 ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[2]} val=${BASH_REMATCH[3]}
    if [[ $val =~ ^\"(.*)\"$ || $val =~ ^\'(.*)\'$ ]]; then val=${BASH_REMATCH[1]}; fi
    # shellcheck disable=SC2034,SC2004 # `into` is the caller's associative array
    into[$key]=$val
  done <"$1"
}

declare -A CONF=() EFF=()
load_conf() { CONF=(); read_env_file "$CONF_FILE" CONF; }

# ---- checks ---------------------------------------------------------------------------------------------------
check_os() {
  local file=${WENMO_DEPLOY_OS_RELEASE:-/etc/os-release}
  declare -A os=()
  read_env_file "$file" os
  local id=${os[ID]:-unknown} like=" ${os[ID_LIKE]:-} " pretty=${os[PRETTY_NAME]:-${os[ID]:-an unknown system}}
  [[ $id == debian || $id == ubuntu || $like == *" debian "* || $like == *" ubuntu "* ]] ||
    die "unsupported OS: $pretty ($file says ID=$id)" "deploy.sh supports Debian and Ubuntu (it uses apt-get)." \
      "On another system follow the manual steps in README.md (Deploying)."
  say "OS: $pretty"
}

# systemd where it is PID 1 (sd_booted: /run/systemd/system), else the launcher alone, saying so.
choose_mode() {
  MODE=${OPT_MODE:-${CONF[mode]:-}}
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    SYSTEMD_VERSION=$(systemctl --version | awk 'NR==1 {print $2}')
    MODE=${MODE:-systemd}
    [[ $MODE == background ]] || say "systemd: $SYSTEMD_VERSION"
  elif [[ -z $MODE ]]; then
    MODE=background
    say "systemd is not running here (PID 1 is $(cat /proc/1/comm 2>/dev/null || printf 'not systemd'); a container?):"
    say "the launcher runs as a background process instead (--no-systemd): pid file, log file, no restart at boot"
  elif [[ $MODE == systemd ]]; then
    SYSTEMD_VERSION=$(systemctl --version 2>/dev/null | awk 'NR==1 {print $2}' || true) NO_SYSTEMD=1
  fi
  if [[ $MODE == systemd ]]; then STATE_DIR=/var/lib/$SERVICE; else STATE_DIR=$PREFIX/state; fi
}

check_privileges() {
  [[ $MODE != systemd || $SVC_USER != root ]] ||
    die "--user root: the service must run as an unprivileged user" "leave --user out (a 'wenmo' user is created)"
  is_root && return 0
  ((DRY_RUN)) && { say "not root: fine for --dry-run"; return 0; }
  [[ $MODE != systemd ]] || die "installing a systemd service needs root" "run: sudo $0 ${ORIGINAL_ARGS[*]}" \
    "(or, without root, --no-systemd --prefix DIR in a directory you own)"
  [[ $SVC_USER == "$(id -un)" ]] || die "--user $SVC_USER needs root (without root the service runs as you, $(id -un))"
}

existing_ancestor() { local p=$1; while [[ ! -e $p ]]; do p=$(dirname "$p"); done; printf '%s\n' "$p"; }

check_writable() {  # check_writable PATH WHAT: before anything is created
  local base
  base=$(existing_ancestor "$1")
  [[ -d $base ]] || die "cannot create $2 $1: $base is not a directory" "choose another location (--prefix / --models-dir)"
  [[ -w $base ]] || die "cannot write $2 $1: $base is not writable$(is_root && printf ' (read-only file system?)' || printf ' by %s' "$(id -un)")" \
    "choose another location (--prefix / --models-dir)$(is_root || printf ', or run with sudo')"
}

# The service user runs <prefix>/venv/bin/python: every directory above the prefix must let it through
# (mktemp -d makes 0700 directories; a home directory often is 0700 or 0750).
check_traversable() {
  is_root && [[ $SVC_USER != root ]] || return 0
  local dir
  dir=$(existing_ancestor "$PREFIX")
  while :; do
    if [[ $(stat -c %U "$dir") != "$SVC_USER" && $(( $(stat -c '0%a' "$dir") & 1 )) == 0 ]]; then
      die "the service user $SVC_USER cannot enter $dir (mode $(stat -c %a "$dir"), owner $(stat -c %U "$dir")), so it cannot run the code under $PREFIX" \
        "make it traversable (chmod o+x $dir) or choose a --prefix outside it (the default /opt/wenmo works)"
    fi
    [[ $dir == / ]] && break
    dir=$(dirname "$dir")
  done
}

create_writable() {  # access(2) can be wrong (NFS root squash, ACLs): create the directory for real first
  local err
  ((DRY_RUN)) && return 0
  if ! err=$(mkdir -p "$1" 2>&1) || ! err=$(touch "$1/.wenmo-write-test" 2>&1); then
    die "cannot write $2 $1: ${err#*: }" "choose another location (--prefix / --models-dir)"
  fi
  rm -f "$1/.wenmo-write-test"
}

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

apt_install() {  # apt_install WHAT PACKAGE...: the first of the packages that installs wins
  local what=$1 pkg
  shift
  say "$what is missing: installing it with apt-get"
  ((DRY_RUN)) && { run apt-get install -y "$1"; return 0; }
  is_root || die "$what is missing" "install it: sudo apt-get install $1"
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update -q || true  # a fresh VM or container has no package lists yet
  for pkg in "$@"; do run apt-get install -y -q "$pkg" && return 0; done
  die "apt-get could not install $what ($*; see its message above)" "install it yourself ($(sudo_)apt-get install $1) and re-run"
}

check_python() {
  PY=${OPT_PYTHON:-${CONF[python]:-}}
  [[ -n $PY ]] || { [[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3; } || PY=$(command -v python3 || true)
  if [[ -z $PY || ! -x $(command -v "$PY" || true) ]]; then
    if [[ -n $OPT_PYTHON ]] || ! command -v apt-get >/dev/null; then
      die "no Python found (${PY:-python3})" "install it: $(sudo_)apt-get install python3 python3-venv (or --python PATH)"
    fi
    apt_install "Python 3" python3 python3-venv
    PY=/usr/bin/python3
  fi
  PY=$(command -v "$PY")
  local version
  version=$(python_version "$PY") || die "$PY does not run" "check it, or choose another with --python PATH"
  [[ $(printf '%s\n%s\n' "$MIN_PYTHON" "$version" | sort -V | head -n1) == "$MIN_PYTHON" ]] ||
    die "$PY is Python $version; Wenmo needs $MIN_PYTHON or newer" \
      "install a newer one (Ubuntu 20.04: the deadsnakes PPA's python3.11 + python3.11-venv) and pass --python /usr/bin/python3.11"
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian ships venv's ensurepip separately; only apt's own Python (under /usr) can get it from apt.
    if [[ $("$PY" -c 'import sys; print(sys.base_prefix)' 2>/dev/null) != /usr ]] || ! command -v apt-get >/dev/null; then
      die "$PY (Python $version) has no venv module" \
        "install it for that Python (Debian/Ubuntu: $(sudo_)apt-get install python$version-venv)," \
        "or use the system Python: --python /usr/bin/python3"
    fi
    apt_install "Python's venv module" "python$version-venv" python3-venv
    ((DRY_RUN)) || "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
      die "$PY still has no venv module after installing python$version-venv" "install it by hand and re-run"
  fi
  say "Python: $PY ($version, venv available)"
}

# GPU_SPECS: "name, MiB, compute capability" per GPU (the profile's input); GPU_DRIVER. Returns 1 without nvidia-smi.
detect_gpu() {
  local smi=${WENMO_DEPLOY_NVIDIA_SMI:-nvidia-smi} out rc=0 line
  command -v "$smi" >/dev/null 2>&1 || return 1
  out=$("$smi" --query-gpu=name,memory.total,compute_cap,driver_version --format=csv,noheader,nounits 2>&1) || rc=$?
  if ((rc != 0)) || [[ -z $out ]]; then
    die "nvidia-smi is installed but failed (exit $rc): $(head -n1 <<<"$out")" \
      "The NVIDIA driver is not working. After a driver or kernel upgrade a reboot usually fixes it;" \
      "otherwise reinstall the driver (Ubuntu: $(sudo_)ubuntu-drivers install). To run on the CPU instead: --cpu"
  fi
  GPU_SPECS=()
  while IFS= read -r line; do [[ -n $line ]] && GPU_SPECS+=("${line%,*}"); done <<<"$out"
  GPU_DRIVER=$(head -n1 <<<"$out") GPU_DRIVER=${GPU_DRIVER##*, }
  [[ ${GPU_SPECS[0]} =~ ,\ *[0-9]+,\ *[0-9]+\.[0-9]+$ ]] || die "cannot read the GPU's memory and compute capability from nvidia-smi: '${GPU_SPECS[0]}'" \
    "(MIG and some virtual GPUs report [N/A]) run on the CPU (--cpu), or set the batch sizes by hand (--max-batch-tokens …)"
}

check_gpu() {
  GPU_SPECS=() GPU_DRIVER=''
  if [[ $CPU == 1 ]]; then say "GPU: not used (--cpu): inference runs on the CPU, much slower"; return 0; fi
  if ! detect_gpu; then
    [[ $DEMO == 1 ]] || die "no NVIDIA GPU driver found: nvidia-smi is not on the PATH" \
      "On a GPU VM, install the NVIDIA driver and reboot (Ubuntu: $(sudo_)ubuntu-drivers install;" \
      "Debian: apt-get install nvidia-driver from non-free), or use a cloud image that has it." \
      "No GPU on this machine? Run on the CPU (slow, for trying things out): $0 --cpu" \
      "or have a first look with tiny offline models: $0 --demo"
    say "GPU: none found (no nvidia-smi); --demo runs on the CPU"
    CPU=1
    return 0
  fi
  local major=${GPU_DRIVER%%.*}
  [[ ! $major =~ ^[0-9]+$ ]] || ((major >= MIN_DRIVER_MAJOR)) ||
    die "NVIDIA driver $GPU_DRIVER is too old: PyTorch's CUDA 12 build needs driver $MIN_DRIVER_MAJOR or newer" \
      "upgrade the driver (Ubuntu: $(sudo_)ubuntu-drivers install; then reboot), or run on the CPU: --cpu"
  say "GPU: ${GPU_SPECS[0]}, driver $GPU_DRIVER$( ((${#GPU_SPECS[@]} > 1)) && printf ' (%d GPUs; Wenmo uses GPU 0)' "${#GPU_SPECS[@]}")"
}

free_mib() { df -Pk "$(existing_ancestor "$1")" | awk 'NR==2 {print int($4 / 1024), $6}'; }

check_disk() {
  declare -A need=() what=()
  local free mount mib=$NEED_VENV_GPU_MIB
  [[ $CPU == 1 ]] && mib=$NEED_VENV_CPU_MIB
  if [[ $(venv_state) != current ]]; then
    read -r free mount < <(free_mib "$PREFIX")
    need[$mount]=$mib what[$mount]=" virtualenv (${mib} MiB)"
  fi
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then
    read -r free mount < <(free_mib "$MODEL_DIR")
    need[$mount]=$((${need[$mount]:-0} + NEED_MODELS_MIB)) what[$mount]+=" models (${NEED_MODELS_MIB} MiB)"
  fi
  for mount in "${!need[@]}"; do
    read -r free _ < <(free_mib "$mount")
    mib=${need[$mount]}
    ((free >= mib)) || die "not enough disk space on $mount: $free MiB free, ${need[$mount]} MiB needed for${what[$mount]}" \
      "free some space, grow the disk, or put the models elsewhere: --models-dir /bigdisk/wenmo-models"
    say "disk: $free MiB free on $mount (needs ${need[$mount]} MiB for${what[$mount]})"
  done
  ((${#need[@]})) || say "disk: nothing new to download or install"
}

probe_host() {  # the address to probe the service on: loopback when it binds every interface
  case $1 in
    0.0.0.0 | '' | '*') printf '127.0.0.1' ;;
    :: | '[::]') printf '[::1]' ;;
    *:*) local h=${1#[}; printf '[%s]' "${h%]}" ;;
    *) printf '%s' "$1" ;;
  esac
}

check_port() {
  local why holder=''
  why=$("$PY" -c 'import socket, sys
host, port = sys.argv[1].strip("[]"), int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
try:
    s.bind((host, port))
except OSError as e:
    print(e.strerror or e)' "$HOST" "$PORT")
  if [[ -z $why ]]; then say "port: $PORT on $HOST is free"; return 0; fi
  if service_running; then say "port: $PORT is held by the running Wenmo, which will be restarted"; return 0; fi
  command -v ss >/dev/null && holder=$(ss -ltnpH "sport = :$PORT" 2>/dev/null | grep -o 'users:(([^)]*' | sed -n '1s/users:((//p' || true)
  die "port $PORT on $HOST is not available: $why${holder:+ (held by $holder)}" \
    "stop the program that holds it, or choose another port: $0 --port 8080 ..."
}

# ---- the profile and the settings files: Python (app/hostprofile.py, standard library only) ------------------
app_profile() {  # app_profile ARGS...: python -m app profile for this machine, run from the checkout
  local gpu=(--cpu) spec ds=$REPO/ds_config.json
  if [[ $CPU != 1 && ${#GPU_SPECS[@]} -gt 0 ]]; then gpu=(); for spec in "${GPU_SPECS[@]}"; do gpu+=(--gpu "$spec"); done; fi
  [[ -f $DS_FILE ]] && ds=$DS_FILE
  (cd "$REPO" && PYTHONDONTWRITEBYTECODE=1 "$PY" -m app profile "${gpu[@]}" --ds-config "$ds" "$@")
}

settings_args() {  # the arguments that merge the profile with the settings files
  local set
  SETTINGS_ARGS=(--etc "$ETC" --prefix "$PREFIX" --state-dir "$STATE_DIR")
  for set in "${SETS[@]}"; do SETTINGS_ARGS+=(--set "$set"); done
}

resolve_settings() {  # EFF: the settings the service will see, from Python; HOST, PORT, MODEL_DIR, DRAIN_S
  local out line
  settings_args
  out=$(app_profile "${SETTINGS_ARGS[@]}" 2>&1) || die "the settings are not valid: ${out#error: }" \
    "correct $OVR_FILE or the flag, and re-run"
  EFF=()
  while IFS= read -r line; do
    case $line in '# profile: '*) PROFILE=${line#'# profile: '} ;; *=*) EFF[${line%%=*}]=${line#*=} ;; esac
  done <<<"$out"
  HOST=${EFF[WENMO_HOST]} PORT=${EFF[WENMO_PORT]} MODEL_DIR=${EFF[WENMO_MODEL_DIR]} DRAIN_S=${EFF[WENMO_LAUNCHER_DRAIN_S]:-30}
  [[ $MODEL_DIR == /* ]] || die "WENMO_MODEL_DIR=$MODEL_DIR must be an absolute path"
}

# ---- install steps --------------------------------------------------------------------------------------------
ensure_user() {
  USER_CREATED=${CONF[user_created]:-0}
  [[ ${CONF[user]:-} == "$SVC_USER" ]] || USER_CREATED=0
  if id -u "$SVC_USER" >/dev/null 2>&1; then say "service user: $SVC_USER (exists)"
  else
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
      --comment "Wenmo service" "$SVC_USER"
    USER_CREATED=1
  fi
  # /dev/nvidia* are usually world-accessible; where they are not, their group grants access.
  if [[ -c /dev/nvidia0 && $(stat -c %a /dev/nvidia0) != *6 && $(stat -c %G /dev/nvidia0) != root ]]; then
    run usermod -aG "$(stat -c %G /dev/nvidia0)" "$SVC_USER"
  fi
  SVC_GROUP=$(id -gn "$SVC_USER" 2>/dev/null || printf '%s' "$SVC_USER")
}

as_user() {  # as_user CMD...: run a command as the service user (when root)
  if is_root && [[ $SVC_USER != root ]]; then setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups -- "$@"
  else "$@"; fi
}

install_code() {
  local new=$PREFIX/src.new item items=()
  for item in app launcher bench deploy.sh ds_config.json requirements.txt pyproject.toml README.md; do
    [[ -e $REPO/$item ]] && items+=("$item")
  done
  ((DRY_RUN)) && { say "would copy ${items[*]} from $REPO to $SRC (replacing the old copy in one rename)"; return 0; }
  rm -rf "$new" "$PREFIX/src.old"
  mkdir -p "$new"
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - "${items[@]}" | tar -C "$new" --no-same-owner -xf -
  chmod -R u=rwX,go=rX "$new"
  [[ -d $SRC ]] && mv "$SRC" "$PREFIX/src.old"
  mv "$new" "$SRC"
  rm -rf "$PREFIX/src.old"
  say "code: ${items[*]} -> $SRC"
}

# pip's arguments; on the CPU torch comes from PyTorch's CPU index unless WENMO_DEPLOY_PIP_ARGS names an index.
pip_args() {
  PIP_ARGS=()
  read -r -a PIP_ARGS <<<"${WENMO_DEPLOY_PIP_ARGS:-}"
  if [[ $CPU == 1 && " ${PIP_ARGS[*]} " != *" --index-url"* && " ${PIP_ARGS[*]} " != *" -i "* &&
    " ${PIP_ARGS[*]} " != *" --extra-index-url"* && " ${PIP_ARGS[*]} " != *" --no-index "* ]]; then
    PIP_ARGS+=(--extra-index-url "$CPU_TORCH_INDEX")
  fi
}

requirements_hash() {
  { cat "$REPO/requirements.txt"; python_version "$PY"; printf '%s\n' "${WENMO_DEPLOY_PIP_ARGS:-}"; } | sha256sum | cut -d' ' -f1
}

venv_state() {  # current | stale | missing
  if [[ ! -x $VENV/bin/python ]]; then printf 'missing'
  elif [[ $(cat "$VENV/.wenmo-requirements" 2>/dev/null) == "$(requirements_hash)" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
    printf 'current'
  else printf 'stale'; fi
}

install_venv() {
  local state torch_req
  state=$(venv_state)
  [[ $state != current ]] || { say "virtualenv $VENV is up to date with requirements.txt (reused)"; return 0; }
  pip_args
  torch_req=$(grep -E '^torch==' "$REPO/requirements.txt") || die "requirements.txt pins no torch==VERSION"
  if [[ $state == stale && $(python_version "$VENV/bin/python" || true) != "$(python_version "$PY")" ]]; then
    say "the virtualenv was built with another Python: rebuilding it"
    run rm -rf "$VENV"
  fi
  [[ -x $VENV/bin/python ]] || run "$PY" -m venv "$VENV"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore DS_BUILD_OPS=0
  if [[ $CPU == 1 ]]; then say "installing the Python packages (torch's CPU build, ~200 MB: a minute or two)"
  else say "installing the Python packages (torch is large, ~3 GB with its CUDA libraries: a few minutes)"; fi
  run "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" --upgrade pip || warn "could not upgrade pip; going on with the virtualenv's"
  # torch first: deepspeed is a source package whose build imports torch (hence --no-build-isolation).
  run "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" setuptools wheel "$torch_req" ||
    die "pip could not install $torch_req (see pip's message above)" \
      "check the network to PyPI and re-run (finished downloads are cached); WENMO_DEPLOY_PIP_ARGS adds pip options"
  run "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" --no-build-isolation -r "$REPO/requirements.txt" ||
    die "pip could not install requirements.txt (see pip's message above)" \
      "check the network to PyPI and re-run; WENMO_DEPLOY_PIP_ARGS adds pip options"
  ((DRY_RUN)) || requirements_hash >"$VENV/.wenmo-requirements"
}

verify_torch() {
  ((DRY_RUN)) && { say "would check that torch sees the GPU"; return 0; }
  local out rc=0 line hint="check that user $SVC_USER can read $PY's installation"
  [[ $(readlink -f "$PY") == /root/* || $(readlink -f "$PY") == /home/* ]] &&
    hint="$PY lives in a home directory (pyenv?) that user $SVC_USER cannot read: use --python /usr/bin/python3"
  out=$(cd "$SRC" && as_user "$VENV/bin/python" - "$CPU" 2>&1 <<'EOF'
import sys
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}")
if sys.argv[1] != "1":
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
      "the driver is probably older than this CUDA build needs: upgrade it ($(sudo_)ubuntu-drivers install) and reboot," \
      "or run on the CPU: --cpu" ;;
    4) die "the installed torch is a CPU-only build ($(head -n1 <<<"$out"))" \
      "remove a CPU index from WENMO_DEPLOY_PIP_ARGS / pip.conf and re-run, or run on the CPU: --cpu" ;;
    *) die "the virtualenv does not work as user $SVC_USER: $(tail -n1 <<<"$out")" "$hint" ;;
  esac
}

install_ds_config() {  # updated with the code unless you edited it (then the new one is left beside it)
  local new=$REPO/ds_config.json dist=$ETC/.ds_config.json.dist
  if [[ ! -f $DS_FILE ]] || { [[ -f $dist ]] && cmp -s "$DS_FILE" "$dist"; }; then
    cmp -s "$new" "$DS_FILE" || run install -m 0644 "$new" "$DS_FILE"
  elif ! cmp -s "$new" "$DS_FILE"; then
    say "keeping your edited $DS_FILE; the new default is $DS_FILE.new"
    run install -m 0644 "$new" "$DS_FILE.new"
  fi
  cmp -s "$new" "$dist" || run install -m 0644 "$new" "$dist"
}

write_conf() {
  put_file "$CONF_FILE" 0644 <<EOF
# deploy.sh's record of this installation (read by re-runs and by status/logs/stop/uninstall).
mode=$MODE
user=$SVC_USER
user_created=$USER_CREATED
demo=$DEMO
cpu=$CPU_CHOSEN
python=$PY
state_dir=$STATE_DIR
installed=$(date -u +%Y-%m-%dT%H:%MZ)
EOF
  ((DRY_RUN)) || rm -f "$ETC/.deploy.conf.uninstalled"
}

missing_models() {  # "role id" lines: ModelScope ids (not local directories) not completely downloaded
  local role id
  for role in EMBED CROSS NLU; do
    id=${EFF[WENMO_${role}_MODEL]}
    [[ -d $id || -f $MODEL_DIR/$id/.wenmo-complete ]] || printf '%s %s\n' "${role,,}" "$id"
  done
}

download_models() {
  [[ $DEMO != 1 ]] || { say "--demo: tiny models are built by the app at its first start; nothing to download"; return 0; }
  local role id target todo
  todo=$(missing_models)
  for role in EMBED CROSS NLU; do
    id=${EFF[WENMO_${role}_MODEL]}
    if [[ -d $id ]]; then say "${role,,} model: local directory $id"
    elif ! grep -q "^${role,,} " <<<"$todo"; then say "${role,,} model: $id already in $MODEL_DIR"; fi
  done
  while read -r role id; do
    [[ -n $role ]] || continue
    target=$MODEL_DIR/$id
    say "$role model: downloading $id from ModelScope into $target"
    # The app's own resolver: the layout and completion marker the service looks for.
    (cd "$SRC" 2>/dev/null || ((DRY_RUN)); run "$VENV/bin/python" -c \
      'import sys; from app.engine.loading import resolve_model; print(resolve_model(sys.argv[1], sys.argv[2]))' "$id" "$MODEL_DIR") ||
      die "downloading the $role model $id into $target failed (see the message above)" \
        "Re-run the same command to retry: files already downloaded are kept and partial ones resume." \
        "Without network to modelscope.cn: copy the model directory from another machine to $target," \
        "create the empty file $target/.wenmo-complete, and re-run (or point --models-dir at an existing copy)."
    ! is_root || run chown -R "$SVC_USER:$SVC_GROUP" "$target"
  done <<<"$todo"
  ((DRY_RUN)) && return 0
  for role in EMBED CROSS NLU; do  # an existing copy (--models-dir) must be readable by the service user
    id=${EFF[WENMO_${role}_MODEL]} target=$MODEL_DIR/${EFF[WENMO_${role}_MODEL]}
    [[ -d $id ]] && target=$id
    as_user test -r "$target/config.json" -a -x "$target" || die "the service user $SVC_USER cannot read the ${role,,} model in $target" \
      "give it access (e.g. chmod -R a+rX $target and the directories above it) and re-run"
  done
}

ensure_password() {
  if [[ -f $CRED_FILE && $OPT_ROTATE != 1 ]]; then say "password: kept ($CRED_FILE; --rotate-password makes a new one)"
  else
    local password
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    printf '%s:%s\n' "$HTTP_USER" "${password:0:24}" | put_file "$CRED_FILE" 0600 secret
    ((DRY_RUN)) || if [[ $OPT_ROTATE == 1 ]]; then say "password: rotated (the new one is in $CRED_FILE)"
    else say "password: created in $CRED_FILE"; fi
  fi
  # systemd before 247 has no credentials: the service reads the password from a root-only env file.
  if [[ $MODE == systemd && ${SYSTEMD_VERSION:-999} -lt 247 ]]; then
    ((DRY_RUN)) && { say "would write $CRED_DIR/wenmo-auth.env (0600): WENMO_AUTH from $CRED_FILE"; return 0; }
    printf 'WENMO_AUTH=%s\n' "$(head -n1 "$CRED_FILE")" | put_file "$CRED_DIR/wenmo-auth.env" 0600 secret
  fi
  return 0
}

# ---- the service ----------------------------------------------------------------------------------------------
stop_timeout_s() { printf '%d' $(( ${DRAIN_S%.*} + 31 )); }

render_unit() {
  local cred_lines="EnvironmentFile=$CRED_DIR/wenmo-auth.env"
  if ((${SYSTEMD_VERSION:-999} >= 251)); then
    cred_lines="LoadCredential=wenmo-auth:$CRED_FILE"$'\n'"Environment=WENMO_AUTH_FILE=%d/wenmo-auth"
  elif ((${SYSTEMD_VERSION:-999} >= 247)); then
    cred_lines="LoadCredential=wenmo-auth:$CRED_FILE"$'\n'"Environment=WENMO_AUTH_FILE=/run/credentials/%n/wenmo-auth"
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
ExecStart=$VENV/bin/python -m launcher$([[ $DEMO == 1 ]] && printf ' --demo')
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

# Without systemd the launcher is the process manager: it holds a lock on its pid file while it runs
# (launcher/daemon.py), so a held lock means running, whatever PID was reused since.
launcher_pid() { [[ -f $PID_FILE ]] && ! flock -n "$PID_FILE" true 2>/dev/null && cat "$PID_FILE"; }

service_running() {
  if [[ ${CONF[mode]:-$MODE} == systemd ]]; then systemctl is-active --quiet "$SERVICE" 2>/dev/null
  else launcher_pid >/dev/null; fi
}

stop_background() {  # SIGTERM: the launcher drains the app and exits; its lock is released when it has
  local pid
  pid=$(launcher_pid) || { ((DRY_RUN)) || rm -f "$PID_FILE"; return 0; }
  ((DRY_RUN)) && { say "would stop the running launcher (pid $pid)"; return 0; }
  run kill -TERM "$pid"
  if ! flock -w "$(stop_timeout_s)" "$PID_FILE" true; then
    warn "the launcher did not stop within $(stop_timeout_s) s: killing it (its app gets SIGTERM and drains)"
    run kill -KILL "$pid" || true
  fi
  rm -f "$PID_FILE"
  say "stopped the launcher (pid $pid)"
}

start_background() {
  local envv=() key cmd=("$VENV/bin/python" -m launcher --pid-file "$PID_FILE" --log-file "$LOG_FILE")
  [[ $DEMO == 1 ]] && cmd+=(--demo)
  ((DRY_RUN)) && { say "would start in the background as $SVC_USER, in $SRC: $(quote "${cmd[@]}")"; return 0; }
  declare -A env=()
  read_env_file "$GEN_FILE" env
  read_env_file "$OVR_FILE" env
  # The environment systemd would give it, and the service user's own copy of the password.
  envv=("HOME=$STATE_DIR" "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "LANG=C.UTF-8"
    "PYTHONUNBUFFERED=1" "WENMO_AUTH_FILE=$RUN_CRED")
  for key in "${!env[@]}"; do envv+=("$key=${env[$key]}"); done
  install -m 0600 "$CRED_FILE" "$RUN_CRED"
  is_root && chown "$SVC_USER:$SVC_GROUP" "$RUN_CRED" "$RUN_DIR" "$LOG_DIR"
  printf '    + %s\n' "$(quote "${cmd[@]}")"
  # fd 9 is the deploy lock: the launcher must not hold it.
  (cd "$SRC" && as_user env -i "${envv[@]}" "${cmd[@]}" 9>&-) ||
    die "the launcher did not start (see its message above; the end of $LOG_FILE:)" "$(tail -n 20 "$LOG_FILE" 2>/dev/null)"
  say "launcher started in the background (pid $(cat "$PID_FILE"), log $LOG_FILE)"
}

install_service() {
  if [[ $MODE == systemd ]]; then
    [[ ${CONF[mode]:-} == background ]] && stop_background
    render_unit | put_file "$UNIT_FILE" 0644
    run systemctl daemon-reload
    run systemctl enable "$SERVICE.service"
    run systemctl reset-failed "$SERVICE.service" 2>/dev/null || true
    run systemctl restart "$SERVICE.service"
  else
    if [[ ${CONF[mode]:-} == systemd && -f $UNIT_FILE ]]; then run systemctl disable --now "$SERVICE.service" || true; fi
    stop_background
    start_background
  fi
}

http_status() {  # http_status URL: the HTTP status, 000 when nothing answers
  "${PY:-python3}" -c 'import sys, urllib.error, urllib.request
try:
    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")' "$1"
}

wait_ready() {
  local url code last=-15 waited=0 state
  url="http://$(probe_host "$HOST"):$PORT/readyz"
  ((DRY_RUN)) && { say "would wait up to $OPT_WAIT_S s for $url to answer 200"; return 0; }
  say "waiting for $url (loading the models)"
  while code=$(http_status "$url") && [[ $code != 200 ]]; do
    if [[ $MODE == systemd ]]; then
      state=$(systemctl is-active "$SERVICE" 2>/dev/null || true)
      if [[ $state == failed || $state == inactive ]]; then
        journalctl -u "$SERVICE" -n 40 --no-pager >&2 || true
        die "the service stopped ($state) before it was ready; its last log lines are above" "full log: $0 logs; fix the cause and re-run $0"
      fi
    elif ! launcher_pid >/dev/null; then
      tail -n 40 "$LOG_FILE" >&2 || true
      die "the launcher stopped before the app was ready; the end of $LOG_FILE is above" "fix the cause and re-run $0"
    fi
    ((waited < OPT_WAIT_S)) || die "not ready after $OPT_WAIT_S s (last answer: $code)" \
      "it may still be loading: watch $0 logs -f, then $0 status; --wait-s waits longer"
    ((waited - last < 15)) || { say "... $waited s, /readyz: $code"; last=$waited; }
    sleep 2
    waited=$((waited + 2))
  done
  say "ready after $waited s"
}

summary() {
  local addr url
  addr=$(hostname -I 2>/dev/null | awk '{print $1}' || true)
  url="http://$(probe_host "$HOST"):$PORT/"
  printf '\nWenmo is %s (took %s).\n' "$( ((DRY_RUN)) && printf 'not installed: this was a dry run' || printf 'running and ready')" "$(elapsed)"
  case $HOST in
    0.0.0.0 | :: | '[::]') printf '  URL        http://%s:%s/   (this machine: %s)\n' "${addr:-<this machine>}" "$PORT" "$url"
      printf '             open TCP port %s in the cloud firewall / security group to reach it from outside\n' "$PORT" ;;
    *) printf '  URL        %s\n' "$url" ;;
  esac
  printf '  user       %s\n' "$HTTP_USER"
  printf '  password   %scut -d: -f2- %s\n' "$(sudo_reader)" "$CRED_FILE"
  # shellcheck disable=SC2016 # a command for the reader to run, not to expand here
  printf '  try it     curl -u "$(%scat %s)" %sv1/embeddings -H "Content-Type: application/json" -d '"'"'{"input": ["你好"]}'"'"'\n' \
    "$(sudo_reader)" "$CRED_FILE" "$url"
  printf '  settings   %s (generated) and %s (yours)\n' "$GEN_FILE" "$OVR_FILE"
  printf '  manage     %s%s/deploy.sh status | logs [-f] | restart | stop | uninstall\n' "$(sudo_reader)" "$SRC"
}

# ---- commands -------------------------------------------------------------------------------------------------
cmd_install() {
  [[ -d $REPO/app && -d $REPO/launcher && -f $REPO/requirements.txt && -f $REPO/ds_config.json ]] ||
    die "deploy.sh must run from a Wenmo checkout: $REPO has no app/, launcher/ or requirements.txt" \
      "clone the repository and run ./deploy.sh from its top directory"
  printf 'Wenmo deploy%s: prefix %s\n' "$( ((DRY_RUN)) && printf ' (dry run: nothing is changed)')" "$PREFIX"
  load_conf
  DEMO=${OPT_DEMO:-${CONF[demo]:-0}} CPU=${OPT_CPU:-${CONF[cpu]:-0}}
  CPU_CHOSEN=$CPU  # remembered: not the --demo fallback to the CPU
  SVC_USER=${OPT_USER:-${CONF[user]:-}}
  [[ -n $SVC_USER ]] || if is_root; then SVC_USER=wenmo; else SVC_USER=$(id -un); fi

  step "checking this machine"
  check_os
  choose_mode
  check_privileges
  if [[ -n ${NO_SYSTEMD:-} ]]; then
    ((DRY_RUN)) || die "systemd is not running on this machine (a container?), and --systemd was asked for" \
      "run the launcher as a background process instead: $0 --no-systemd"
    warn "systemd is not running on this machine: a real run would stop here (use --no-systemd)"
  fi
  check_writable "$PREFIX" "the prefix"
  check_python
  check_gpu
  resolve_settings
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then check_writable "$MODEL_DIR" "the models directory"; fi
  check_port
  check_disk
  check_traversable
  say "profile: $PROFILE"

  step "installing into $PREFIX"
  create_writable "$PREFIX" "the prefix"
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then create_writable "$MODEL_DIR" "the models directory"; fi
  if ((!DRY_RUN)); then
    exec 9>"$PREFIX/.deploy.lock"
    flock -n 9 || die "another deploy.sh is working on $PREFIX" "wait for it to finish"
  fi
  ensure_user
  run mkdir -p "$ETC" "$RUN_DIR" "$LOG_DIR"
  run install -d -m 0700 "$CRED_DIR"
  if [[ $DEMO != 1 && ! -d $MODEL_DIR ]]; then run install -d -m 0755 "$MODEL_DIR"; fi
  if [[ $DEMO != 1 ]] && is_root && [[ $MODEL_DIR == "$PREFIX/models" ]]; then run chown "$SVC_USER:$SVC_GROUP" "$MODEL_DIR"; fi
  if [[ $MODE == background ]]; then
    run install -d -m 0750 "$STATE_DIR"
    ! is_root || run chown -R "$SVC_USER:$SVC_GROUP" "$STATE_DIR"
  fi
  install_code
  install_venv
  verify_torch

  step "configuring (profile: $PROFILE)"
  install_ds_config
  settings_args
  app_profile "${SETTINGS_ARGS[@]}" "$( ((DRY_RUN)) && printf -- --show || printf -- --write)" || die "writing the settings failed (see above)"
  write_conf

  step "models"
  download_models

  step "password"
  ensure_password

  step "starting the service ($([[ $MODE == systemd ]] && printf 'systemd unit %s' "$SERVICE.service" || printf 'the launcher in the background'))"
  install_service
  wait_ready
  summary
}

# Subcommands act on an existing installation.
need_install() {
  load_conf
  [[ -f $CONF_FILE ]] || { printf 'deploy.sh: no Wenmo installation in %s (%s is missing); give its --prefix, or install: %s%s\n' \
    "$PREFIX" "$CONF_FILE" "$(sudo_)" "$0" >&2; exit 4; }
  MODE=${CONF[mode]:-systemd} SVC_USER=${CONF[user]:-wenmo} DEMO=${CONF[demo]:-0}
  STATE_DIR=${CONF[state_dir]:-$PREFIX/state} PY=${CONF[python]:-python3}
  SVC_GROUP=$(id -gn "$SVC_USER" 2>/dev/null || printf '%s' "$SVC_USER")
  read_env_file "$GEN_FILE" EFF
  read_env_file "$OVR_FILE" EFF
  HOST=${EFF[WENMO_HOST]:-0.0.0.0} PORT=${EFF[WENMO_PORT]:-7860} DRAIN_S=${EFF[WENMO_LAUNCHER_DRAIN_S]:-30}
  [[ $MODE != systemd || $COMMAND == status || $COMMAND == logs ]] || is_root || die "$COMMAND needs root" "run: sudo $0 $COMMAND"
}

cmd_status() {
  need_install
  local code pid rc=0
  if [[ $MODE == systemd ]]; then
    systemctl status "$SERVICE" --no-pager -n 0 || true
    systemctl is-active --quiet "$SERVICE" || rc=3
  elif pid=$(launcher_pid); then printf 'launcher: running in the background, pid %s (log %s)\n' "$pid" "$LOG_FILE"
  else printf 'launcher: not running (no launcher holds %s)\n' "$PID_FILE"; rc=3; fi
  code=$(http_status "http://$(probe_host "$HOST"):$PORT/readyz")
  printf 'readiness: GET http://%s:%s/readyz -> %s\n' "$(probe_host "$HOST")" "$PORT" "$([[ $code == 000 ]] && printf 'no answer' || printf 'HTTP %s' "$code")"
  if [[ -r $STATE_DIR/launcher-status.json ]]; then
    printf 'launcher status (%s):\n%s\n' "$STATE_DIR/launcher-status.json" "$(cat "$STATE_DIR/launcher-status.json")"
  fi
  if ((rc == 0)) && [[ $code != 200 ]]; then rc=1; fi
  return "$rc"
}

cmd_logs() {
  need_install
  local follow=()
  ((OPT_FOLLOW)) && follow=(-f)
  [[ $MODE != systemd ]] || exec journalctl -u "$SERVICE" -n 200 --no-pager "${follow[@]}"
  [[ -f $LOG_FILE ]] || die "no log file yet: $LOG_FILE"
  ((OPT_FOLLOW)) && follow=(-F)
  exec tail -n 200 "${follow[@]}" "$LOG_FILE"
}

cmd_start() {
  need_install
  if [[ $MODE == systemd && $COMMAND == stop ]]; then
    run systemctl stop "$SERVICE.service"
    say "stopped. It is still enabled and starts again at boot ($(sudo_)systemctl disable $SERVICE, or $0 uninstall)"
    return 0
  elif [[ $MODE == systemd ]]; then
    run systemctl reset-failed "$SERVICE.service" 2>/dev/null || true
    run systemctl "$COMMAND" "$SERVICE.service"
  else
    [[ $COMMAND == start ]] || stop_background
    [[ $COMMAND != stop ]] || { say "stopped"; return 0; }
    if launcher_pid >/dev/null; then say "already running (pid $(launcher_pid))"; else start_background; fi
  fi
  wait_ready
  say "ready: http://$(probe_host "$HOST"):$PORT/ (took $(elapsed))"
}

cmd_uninstall() {
  local kept=$ETC/.deploy.conf.uninstalled item kept_items=()
  load_conf
  # After a plain uninstall the record is kept aside, so that a later --purge knows what to remove.
  [[ -f $CONF_FILE ]] || read_env_file "$kept" CONF
  [[ -f $CONF_FILE || -f $kept ]] || die "no Wenmo installation in $PREFIX ($CONF_FILE is missing)" "give its --prefix"
  MODE=${CONF[mode]:-systemd} SVC_USER=${CONF[user]:-wenmo} STATE_DIR=${CONF[state_dir]:-$PREFIX/state} DRAIN_S=30
  is_root || [[ $MODE == background ]] || die "uninstall needs root" "run: sudo $0 uninstall"
  if [[ $MODE == systemd && -f $UNIT_FILE ]]; then
    run systemctl disable --now "$SERVICE.service" || true
    run rm -f "$UNIT_FILE"
    run systemctl daemon-reload || true
  fi
  stop_background
  [[ -f $CONF_FILE ]] && run mv "$CONF_FILE" "$kept"
  run rm -rf "$VENV" "$SRC" "$RUN_DIR" "$LOG_DIR" "$GEN_FILE" "$ETC/.wenmo.env.written" "$GEN_FILE.bak" \
    "$DS_FILE.new" "$ETC/.ds_config.json.dist" "$PREFIX/.deploy.lock"
  if ((OPT_PURGE)); then
    declare -A files=()
    read_env_file "$OVR_FILE" files
    [[ ${files[WENMO_MODEL_DIR]:-$PREFIX/} == "$PREFIX"/* ]] ||
      say "not deleting your models directory ${files[WENMO_MODEL_DIR]} (outside $PREFIX)"
    run rm -rf "$PREFIX/models" "$CRED_DIR" "$OVR_FILE" "$DS_FILE" "$kept"
    [[ $STATE_DIR == "/var/lib/$SERVICE" || $STATE_DIR == "$PREFIX"/* ]] && run rm -rf "$STATE_DIR"
    if [[ ${CONF[user_created]:-0} == 1 ]] && id -u "$SVC_USER" >/dev/null 2>&1; then run userdel "$SVC_USER" || true; fi
    run rmdir "$ETC" "$PREFIX" 2>/dev/null || true
    say "purged $PREFIX"
  else
    for item in "$PREFIX/models" "$CRED_FILE" "$OVR_FILE" "$DS_FILE" "$STATE_DIR"; do [[ -e $item ]] && kept_items+=("$item"); done
    say "removed the service, the code and the virtualenv"
    ((${#kept_items[@]} == 0)) || say "kept (--purge deletes them too): ${kept_items[*]}"
  fi
}

cmd_profile() {  # this machine's GPU (nvidia-smi), or the CPU where there is none; --gpu-spec for another
  CPU=${OPT_CPU:-0} PY=${OPT_PYTHON:-$(command -v python3 || true)} DS_FILE=''
  [[ -n $PY ]] || die "no python3 found" "install it: $(sudo_)apt-get install python3"
  if [[ $CPU != 1 && ${#GPU_SPECS[@]} == 0 ]] && ! detect_gpu; then CPU=1; fi
  app_profile
}

main() {
  ORIGINAL_ARGS=("$@")
  parse_args "$@"
  set_paths "${OPT_PREFIX:-$(default_prefix)}"
  case $COMMAND in
    install) cmd_install ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    start | restart | stop) cmd_start ;;
    uninstall) cmd_uninstall ;;
    profile) cmd_profile ;;
  esac
}

main "$@"
