#!/usr/bin/env bash
# deploy.sh — one command from a fresh Debian/Ubuntu VM to a running, supervised, password-protected Wenmo.
#
#   ./deploy.sh [--demo]          install, or upgrade in place; start; wait until ready (root, or sudo)
#   ./deploy.sh status | logs [-f] | start | stop | restart | uninstall [--purge] | profile
#   ./deploy.sh --help            every option (README.md "Deploying" has the details)
#
# Only what must be shell lives here: checks, service user, virtualenv, unit file, password, the order of things.
# The rest is Python (standard library, the system Python, before the virtualenv exists): `python -m app profile`
# tunes for the GPU and writes the settings files; `python -m app.deploy` (app/deploy/) decides, formats and writes
# the rest. Without systemd the launcher is the process manager (its --pid-file, --log-file). Safe to re-run.
# Test hooks (environment): WENMO_DEPLOY_NVIDIA_SMI (nvidia-smi to run), WENMO_DEPLOY_OS_RELEASE (os-release to
# read), WENMO_DEPLOY_PIP_ARGS (extra pip arguments, e.g. an index or --find-links).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly REPO SERVICE=wenmo HTTP_USER=wenmo MIN_PYTHON=3.10 STEPS=6
# Without a GPU, torch comes from PyTorch's CPU index: ~200 MB instead of ~3 GB of CUDA libraries.
readonly CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Disk needed, MiB: the three checkpoints (~3.4 GB), the virtualenv (torch with CUDA libraries, or not).
readonly NEED_MODELS_MIB=5120 NEED_VENV_GPU_MIB=10240 NEED_VENV_CPU_MIB=4096

# ---- output ---------------------------------------------------------------------------------------------------
STARTED_AT=$SECONDS STEP=0 DRY_RUN=0
step() { STEP=$((STEP + 1)); printf '\n==> [%d/%d] %s\n' "$STEP" "$STEPS" "$*"; }
say() { printf '    %s\n' "$*"; }
warn() { printf '    warning: %s\n' "$*" >&2; }
die() { printf '\ndeploy.sh: error: %s\n' "$1" >&2; shift; (($# == 0)) || printf '    %s\n' "$@" >&2; exit 1; }
usage_error() { printf 'deploy.sh: %s (see ./deploy.sh --help)\n' "$*" >&2; exit 2; }
elapsed() { local s=$((SECONDS - STARTED_AT)); printf '%d min %d s' $((s / 60)) $((s % 60)); }
quote() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }
is_root() { [[ $(id -u) == 0 ]]; }
# `sudo ` in a command to run as root, for a user who is not root (as root it would only fail in a container).
sudo_() { is_root || printf 'sudo '; }
# `sudo ` in the commands the summary shows, when root came through sudo: the reader is a user, the files root's.
sudo_reader() { if is_root && [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then printf 'sudo '; fi; }
# deploy.sh's Python side (app/deploy/), run from this checkout; a failed check prints deploy.sh's error, exits 1.
deploy_py() { (cd "$REPO" && PYTHONDONTWRITEBYTECODE=1 "${PY:-python3}" -m app.deploy "$@"); }
# Every change to the system goes through run / put_secret / Python's --show, so --dry-run can print it instead.
run() {
  if ((DRY_RUN)); then printf '    would run: %s\n' "$(quote "$@")"; return 0; fi
  printf '    + %s\n' "$(quote "$@")"
  "$@"
}
put_secret() {  # put_secret PATH: stdin to PATH (mode 0600) atomically; a dry run does not show it
  local tmp
  # A dry run still reads the secret to its end: a writer still writing into a pipe nobody reads dies of SIGPIPE,
  # and under pipefail that was deploy.sh's exit status (141, now and then, under load).
  if ((DRY_RUN)); then cat >/dev/null; printf '    would write %s (mode 0600, owner %s)\n    (content not shown: it is a secret)\n' "$1" "$(id -un)"; return 0; fi
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  mv -f "$tmp" "$1"
}

# ---- options --------------------------------------------------------------------------------------------------
usage() {  # the text is app/deploy/usage.py; without any Python, this file's header
  deploy_py help 2>/dev/null || { sed -n '4,6s/^# //p' "$0"; printf '(python3 prints every option)\n'; }
}

COMMAND=install OPT_PREFIX='' OPT_USER='' OPT_PYTHON='' OPT_CPU='' OPT_DEMO='' OPT_MODE=''
OPT_ROTATE=0 OPT_PURGE=0 OPT_FOLLOW=0 OPT_WAIT_S=900
SETS=() GPU_SPECS=()
need_int() { [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 needs a whole number, got '$2'"; }
need_abs() { [[ $2 == /* ]] || usage_error "$1 needs an absolute path, got '$2'"; }

parse_args() {
  local arg value name
  while (($#)); do
    arg=$1
    if [[ $arg == --*=* ]]; then set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; arg=$1; fi
    case $arg in
      install | status | logs | start | stop | restart | uninstall | profile) COMMAND=$arg ;;
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --cpu | --gpu) OPT_CPU=$([[ $arg == --cpu ]] && echo 1 || echo 0) ;;
      --demo | --no-demo) OPT_DEMO=$([[ $arg == --demo ]] && echo 1 || echo 0) ;;
      --no-systemd | --systemd) OPT_MODE=$([[ $arg == --systemd ]] && echo systemd || echo background) ;;
      --rotate-password) OPT_ROTATE=1 ;;
      --purge) OPT_PURGE=1 ;;
      -f | --follow) OPT_FOLLOW=1 ;;
      --prefix | --user | --python | --wait-s | --port | --host | --models-dir | --max-batch-tokens | \
        --max-batch-size | --max-length | --max-concurrent | --threshold-mib | --drain-s | --set | --gpu-spec)
        (($# >= 2)) || usage_error "$arg needs a value"
        value=$2
        shift
        case $arg in
          --prefix) need_abs "$arg" "$value"; OPT_PREFIX=${value%/} ;;
          --user) [[ $value =~ ^[a-z_][a-z0-9_-]*$ ]] || usage_error "--user: '$value' is not a user name"
            OPT_USER=$value ;;
          --python) OPT_PYTHON=$value ;;
          --wait-s) need_int "$arg" "$value"; OPT_WAIT_S=$value ;;
          --port) need_int "$arg" "$value"
            ((value >= 1 && value <= 65535)) || usage_error "--port must be 1..65535, got $value"
            SETS+=("WENMO_PORT=$value") ;;
          --host) [[ -n $value && $value != *[[:space:]/@]* ]] || usage_error "--host: '$value' is not an address"
            SETS+=("WENMO_HOST=$value") ;;
          --models-dir) need_abs "$arg" "$value"; SETS+=("WENMO_MODEL_DIR=${value%/}") ;;
          --max-* | --threshold-mib | --drain-s) need_int "$arg" "$value"  # WENMO_MAX_*, WENMO_LAUNCHER_*
            name=${arg#--}; [[ $arg == --max-* ]] || name=launcher_$name; name=${name//-/_}
            SETS+=("WENMO_${name^^}=$value") ;;
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

choose_mode() {  # MODE (systemd where it is PID 1, else the launcher alone), SYSTEMD_VERSION, STATE_DIR
  local out
  out=$(deploy_py mode --asked "${OPT_MODE:-${CONF[mode]:-}}" --user "$SVC_USER" --prefix "$PREFIX" --prog "$0" \
    --args "${ORIGINAL_ARGS[*]}" "${SHOW[@]}") || exit 1
  eval "$out"
}

writable() {  # writable PATH WHAT [--create]: can it be created (app/deploy/probes.py)? --create: create it
  ((DRY_RUN)) && [[ ${3:-} == --create ]] || deploy_py writable "$@" || exit 1
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
  local version
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

check_gpu() {  # CPU, GPU_DRIVER and GPU_SPECS from nvidia-smi (app/deploy/gpu.py); it says what it found
  local out flags=(--nvidia-smi "${WENMO_DEPLOY_NVIDIA_SMI:-nvidia-smi}" --prog "$0" --sudo "$(sudo_)")
  [[ $CPU != 1 ]] || flags+=(--cpu)
  [[ ${DEMO:-0} != 1 ]] || flags+=(--demo)
  out=$(deploy_py gpu "${flags[@]}" "$@") || exit 1
  eval "$out"
}

check_disk() {  # app/deploy/probes.py: what goes where, on which file system (df), is there room
  local need=() mib=$NEED_VENV_GPU_MIB
  [[ $CPU != 1 ]] || mib=$NEED_VENV_CPU_MIB
  [[ $(venv_state) == current ]] || need+=(--need "$PREFIX" "$mib" virtualenv)
  [[ $DEMO == 1 || -z $(missing_models) ]] || need+=(--need "$MODEL_DIR" "$NEED_MODELS_MIB" models)
  deploy_py disk "${need[@]}" || exit 1
}

check_port() {
  local ours=()
  if service_running; then ours=(--ours-running); fi
  deploy_py port --host "$HOST" --port "$PORT" "${ours[@]}" --prog "$0" || exit 1
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

# pip's arguments; on the CPU torch comes from PyTorch's CPU index unless WENMO_DEPLOY_PIP_ARGS names an index.
pip_args() {
  read -r -a PIP_ARGS <<<"${WENMO_DEPLOY_PIP_ARGS:-}"
  [[ $CPU != 1 || " ${PIP_ARGS[*]} " =~ \ (--index-url|-i|--extra-index-url|--no-index)[\ =] ]] ||
    PIP_ARGS+=(--extra-index-url "$CPU_TORCH_INDEX")
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
  local state torch_req pip
  state=$(venv_state)
  [[ $state != current ]] || { say "virtualenv $VENV is up to date with requirements.txt (reused)"; return 0; }
  pip_args
  pip=("$VENV/bin/python" -m pip install "${PIP_ARGS[@]}")
  torch_req=$(grep -E '^torch==' "$REPO/requirements.txt") || die "requirements.txt pins no torch==VERSION"
  if [[ $state == stale && $(python_version "$VENV/bin/python" || true) != "$(python_version "$PY")" ]]; then
    say "the virtualenv was built with another Python: rebuilding it"
    run rm -rf "$VENV"
  fi
  [[ -x $VENV/bin/python ]] || run "$PY" -m venv "$VENV"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore DS_BUILD_OPS=0
  if [[ $CPU == 1 ]]; then say "installing the Python packages (torch's CPU build, ~200 MB: a minute or two)"
  else say "installing the Python packages (torch is large, ~3 GB with its CUDA libraries: a few minutes)"; fi
  run "${pip[@]}" --upgrade pip || warn "could not upgrade pip; going on with the virtualenv's"
  # torch first: deepspeed is a source package whose build imports torch (hence --no-build-isolation).
  run "${pip[@]}" setuptools wheel "$torch_req" || die "pip could not install $torch_req (see pip's message above)" \
    "check the network to PyPI and re-run (finished downloads are cached); WENMO_DEPLOY_PIP_ARGS adds pip options"
  run "${pip[@]}" --no-build-isolation -r "$REPO/requirements.txt" ||
    die "pip could not install requirements.txt (see pip's message above)" \
      "check the network to PyPI and re-run; WENMO_DEPLOY_PIP_ARGS adds pip options"
  ((DRY_RUN)) || requirements_hash >"$VENV/.wenmo-requirements"
}

# The project itself goes into the virtualenv, for its wenmo and wenmo-launcher commands: editable, so the code
# that runs stays <prefix>/src. Again whenever pyproject.toml changes.
install_project() {
  local stamp
  stamp=$(sha256sum <"$REPO/pyproject.toml")
  [[ $(cat "$VENV/.wenmo-project" 2>/dev/null) != "$stamp" ]] || return 0
  run "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -e "$SRC" ||
    die "pip could not install the project in $SRC into the virtualenv (see pip's message above)"
  ((DRY_RUN)) || printf '%s\n' "$stamp" >"$VENV/.wenmo-project"
}

verify_torch() {  # as the service user: app/deploy/probes.py's torch_report, or why the virtualenv does not run
  ((DRY_RUN)) && { say "would check that torch sees the GPU"; return 0; }
  local out rc=0 cpu=() hint="check that user $SVC_USER can read $PY's installation"
  [[ $CPU != 1 ]] || cpu=(--cpu)
  out=$(cd "$SRC" && as_user "$VENV/bin/python" -m app.deploy torch "${cpu[@]}" --driver "$GPU_DRIVER" --sudo "$(sudo_)" 2>&1) || rc=$?
  if ((rc == 1)) && [[ $out == *'deploy.sh: error:'* ]]; then printf '%s\n' "$out" >&2; exit 1; fi
  [[ $(readlink -f "$PY") != /root/* && $(readlink -f "$PY") != /home/* ]] ||
    hint="$PY lives in a home directory (pyenv?) that user $SVC_USER cannot read: use --python /usr/bin/python3"
  ((rc == 0)) || die "the virtualenv does not work as user $SVC_USER: $(tail -n1 <<<"$out")" "$hint"
  printf '%s\n' "$out"
}

missing_models() {  # "role id" lines: ModelScope ids (not local directories) not completely downloaded
  local role id
  for role in embed cross nlu; do
    id=${EFF[WENMO_${role^^}_MODEL]}
    [[ -d $id || -f $MODEL_DIR/$id/.wenmo-complete ]] || printf '%s %s\n' "$role" "$id"
  done
}

ensure_password() {
  local password
  if [[ -f $CRED_FILE && $OPT_ROTATE != 1 ]]; then say "password: kept ($CRED_FILE; --rotate-password makes a new one)"
  else
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    printf '%s:%s\n' "$HTTP_USER" "${password:0:24}" | put_secret "$CRED_FILE"
    ((DRY_RUN)) || if [[ $OPT_ROTATE == 1 ]]; then say "password: rotated (the new one is in $CRED_FILE)"
    else say "password: created in $CRED_FILE"; fi
  fi
  # systemd before 247 has no credentials: the service reads the password from a root-only env file.
  if [[ $MODE == systemd && ${SYSTEMD_VERSION:-999} -lt 247 ]]; then
    ((DRY_RUN)) && { say "would write $CRED_DIR/wenmo-auth.env (0600): WENMO_AUTH from $CRED_FILE"; return 0; }
    printf 'WENMO_AUTH=%s\n' "$(head -n1 "$CRED_FILE")" | put_secret "$CRED_DIR/wenmo-auth.env"
  fi
  return 0
}

# ---- the service ----------------------------------------------------------------------------------------------
stop_timeout_s() { printf '%d' $((${DRAIN_S%.*} + 31)); }
launcher_cmd() {  # LAUNCHER: the project's wenmo-launcher where it is installed, else python -m launcher
  if [[ -x $VENV/bin/wenmo-launcher ]]; then LAUNCHER=("$VENV/bin/wenmo-launcher"); else LAUNCHER=("$VENV/bin/python" -m launcher); fi
  if [[ $DEMO == 1 ]]; then LAUNCHER+=(--demo); fi
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
  # The lock goes with the launcher's last open file; the process itself ends a moment later.
  for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$PID_FILE"
  say "stopped the launcher (pid $pid)"
}

start_background() {
  local envv=() key cmd
  launcher_cmd
  cmd=("${LAUNCHER[@]}" --pid-file "$PID_FILE" --log-file "$LOG_FILE")
  ((DRY_RUN)) && { say "would start in the background as $SVC_USER, in $SRC: $(quote "${cmd[@]}")"; return 0; }
  declare -A env=()
  read_env_file "$GEN_FILE" env && read_env_file "$OVR_FILE" env
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
    launcher_cmd
    deploy_py unit --write "$UNIT_FILE" "${SHOW[@]}" --service "$SERVICE" --prefix "$PREFIX" --user "$SVC_USER" \
      --group "$SVC_GROUP" --state-dir "$STATE_DIR" --port "$PORT" --drain-s "$DRAIN_S" --stop-timeout-s \
      "$(stop_timeout_s)" --exec-start "$(quote "${LAUNCHER[@]}")" --systemd-version "${SYSTEMD_VERSION:-}" || exit 1
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

service_py() {  # service_py status | wait: app/deploy/service.py on this installation
  deploy_py "$1" --mode "$MODE" --service "$SERVICE" --host "$HOST" --port "$PORT" --prog "$0" --pid-file "$PID_FILE" \
    --log-file "$LOG_FILE" --state-dir "$STATE_DIR" --wait-s "$OPT_WAIT_S" "${@:2}"
}

summary() {  # app/deploy/summary.py: the URL, how to read the password and try the API, how to manage it
  local dry=()
  ((!DRY_RUN)) || dry=(--dry-run)
  deploy_py summary --host "$HOST" --port "$PORT" --prefix "$PREFIX" \
    --address "$(hostname -I 2>/dev/null | awk '{print $1}' || true)" --http-user "$HTTP_USER" \
    --sudo "$(sudo_reader)" --took "$(elapsed)" "${dry[@]}"
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
  check_python  # first: Python answers the next questions
  choose_mode
  writable "$PREFIX" "the prefix"
  check_gpu
  resolve_settings
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then writable "$MODEL_DIR" "the models directory"; fi
  check_port
  check_disk
  if is_root && [[ $SVC_USER != root ]]; then deploy_py traversable --user "$SVC_USER" "$PREFIX" || exit 1; fi
  say "profile: $PROFILE"

  step "installing into $PREFIX"
  writable "$PREFIX" "the prefix" --create
  if [[ $DEMO != 1 && -n $(missing_models) ]]; then writable "$MODEL_DIR" "the models directory" --create; fi
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
  deploy_py code --repo "$REPO" --src "$SRC" "${SHOW[@]}" || exit 1
  install_venv
  install_project
  verify_torch

  step "configuring (profile: $PROFILE)"
  deploy_py ds-config --etc "$ETC" --new "$REPO/ds_config.json" "${SHOW[@]}" || exit 1
  settings_args
  app_profile "${SETTINGS_ARGS[@]}" "${SHOW[@]:---write}" || die "writing the settings failed (see above)"
  deploy_py record --etc "$ETC" "${SHOW[@]}" "mode=$MODE" "user=$SVC_USER" "user_created=$USER_CREATED" "demo=$DEMO" \
    "cpu=$CPU_CHOSEN" "python=$PY" "state_dir=$STATE_DIR" || exit 1

  step "models"
  [[ $DEMO != 1 ]] || say "--demo: tiny models are built by the app at its first start; nothing to download"
  [[ $DEMO == 1 ]] || deploy_py models --model-dir "$MODEL_DIR" --venv "$VENV" --src "$SRC" "${SHOW[@]}" --user "$SVC_USER" \
    --group "$SVC_GROUP" "embed=${EFF[WENMO_EMBED_MODEL]}" "cross=${EFF[WENMO_CROSS_MODEL]}" "nlu=${EFF[WENMO_NLU_MODEL]}" || exit 1

  step "password"
  ensure_password

  step "starting the service ($([[ $MODE == systemd ]] && printf 'systemd unit %s' "$SERVICE.service" || printf 'the launcher in the background'))"
  install_service
  service_py wait "${SHOW[@]}" || exit 1
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
  read_env_file "$GEN_FILE" EFF && read_env_file "$OVR_FILE" EFF
  HOST=${EFF[WENMO_HOST]:-0.0.0.0} PORT=${EFF[WENMO_PORT]:-7860} DRAIN_S=${EFF[WENMO_LAUNCHER_DRAIN_S]:-30}
  [[ $MODE != systemd || $COMMAND == status || $COMMAND == logs ]] || is_root || die "$COMMAND needs root" "run: sudo $0 $COMMAND"
}

cmd_status() { need_install; service_py status; }

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
  service_py wait || exit 1
  say "took $(elapsed)"
}

cmd_uninstall() {  # the service here; the files in Python (app/deploy/files.py)
  local kept=$ETC/.deploy.conf.uninstalled flags=("${SHOW[@]}")
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
  ((!OPT_PURGE)) || flags+=(--purge)
  [[ ${CONF[user_created]:-0} != 1 ]] || flags+=(--user-created)
  deploy_py uninstall --prefix "$PREFIX" --state-dir "$STATE_DIR" --user "$SVC_USER" "${flags[@]}" || exit 1
}

cmd_profile() {  # this machine's GPU (nvidia-smi), or the CPU where there is none; --gpu-spec for another
  CPU=${OPT_CPU:-0} PY=${OPT_PYTHON:-$(command -v python3 || true)} DS_FILE=''
  [[ -n $PY ]] || die "no python3 found" "install it: $(sudo_)apt-get install python3"
  ((${#GPU_SPECS[@]})) || check_gpu --profile
  app_profile
}

main() {
  ORIGINAL_ARGS=("$@")
  parse_args "$@"
  SHOW=()  # Python writes files, or shows them in a dry run
  ((!DRY_RUN)) || SHOW=(--show)
  set_paths "${OPT_PREFIX:-$(default_prefix)}"
  case $COMMAND in start | restart | stop) cmd_start ;; *) "cmd_$COMMAND" ;; esac
}

main "$@"
