#!/usr/bin/env bash
# The project's test command (README quick start; .ci/run calls exactly this).
# Creates .venv with Python 3.11+, installs what the tests need, and runs the whole suite on the CPU.
# Extra arguments go to pytest, e.g. `tests/run.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${WENMO_TEST_VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "tests/run.sh: $PYTHON is older than 3.10; set PYTHON=python3.11" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV" || { echo "tests/run.sh: python venv module missing (apt-get install python3-venv)" >&2; exit 2; }
fi
PY="$VENV/bin/python"

# Reinstall only when the requirement files change.
stamp="$VENV/.wenmo-requirements"
want=$(cat requirements.txt tests/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing requirements into $VENV"
  "$PY" -m pip install -q --upgrade pip
  # torch first: deepspeed is a source package whose build imports torch (hence --no-build-isolation).
  "$PY" -m pip install -q setuptools wheel "$(grep '^torch==' requirements.txt)"
  "$PY" -m pip install -q --no-build-isolation -r requirements.txt -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

# The project itself, editable (pyproject.toml says why): the `wenmo` and `wenmo-launcher` commands in $VENV/bin,
# running this checkout's code. --no-deps: the pins above are already there, nothing is re-resolved. Redone when
# pyproject.toml or the checkout's path changes (a copied .venv would otherwise run another checkout's code).
project_stamp="$VENV/.wenmo-project"
project_want=$({ cat pyproject.toml; pwd; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$project_stamp" 2>/dev/null)" != "$project_want" ] || [ ! -x "$VENV/bin/wenmo" ]; then
  echo "== installing the project into $VENV (the wenmo command)"
  # pip's output only when it fails (setuptools warns about editable installs at length on every run)
  out=$("$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1) || { echo "$out" >&2; exit 1; }
  echo "$project_want" > "$project_stamp"
fi

# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here), with a CJK font
# so screenshots show Chinese; deploy tests use shellcheck and systemd-analyze; the several-replicas test puts
# haproxy in front of two servers (tests/server/test_replicas.py). Installed when root.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing ${need[*]} for the browser, deploy and replica tests"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}") >/dev/null 2>&1 \
    || echo "   (could not install ${need[*]}: the tests that need them are skipped with a reason)"
fi

echo "== lint"
"$PY" -m ruff check app launcher tests
# Random order (pytest-randomly): pytest prints the seed in its header, and tests/conftest.py again at the end
# (also under -q); `tests/run.sh --randomly-seed=N` repeats that order, `-p no:randomly` keeps file order.
echo "== tests (random order; the seed is printed first and last)"
exec "$PY" -m pytest "$@"
