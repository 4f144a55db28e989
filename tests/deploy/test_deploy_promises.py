"""deploy.sh promises that test_deploy.py does not reach, on one real `--demo --no-systemd` installation:

- `--rotate-password` makes a new password and the service restarts with it (README "Password");
- a hand edit of `wenmo.env` is moved to `wenmo.override.env` by the next run, saying so, and the edited file is
  kept as `wenmo.env.bak` (README "Your settings survive re-runs");
- `ds_config.json` is updated on upgrade unless you edited it; then it is kept and the new default is left
  beside it as `ds_config.json.new` (README "Files it writes");
- `status` exits 0 ready, 1 running but not ready, 3 stopped (README "Commands");
- the unit's credential fallbacks for old systemd versions (README "The service"), from `--dry-run`.

The virtualenv step is test_deploy.py's end-to-end test (a real pip install, minutes). Here the installation
starts from a virtualenv that deploy.sh recognises as current (its `.wenmo-requirements` hash) and that sees
this checkout's installed packages through a .pth file, so each deploy.sh run takes seconds; the output must
say it was reused, or the test stops. Every test re-runs deploy.sh itself and asserts on what that run did, so
the tests pass in any order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
from test_deploy import (
    DEPLOY,
    IS_ROOT,
    ROOT,
    clean_env,
    deploy,
    env_keys,
    free_port,
    http,
    launcher_pids,
    output,
    pids_of,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def requirements_hash(pip_args: str) -> str:
    """deploy.sh's requirements_hash: requirements.txt, the Python version, WENMO_DEPLOY_PIP_ARGS."""
    text = (ROOT / "requirements.txt").read_bytes() + f"{sys.version_info[0]}.{sys.version_info[1]}\n".encode()
    return hashlib.sha256(text + (pip_args + "\n").encode()).hexdigest()


def seed_virtualenv(venv: Path) -> None:
    subprocess.run([str(BASE_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", where], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "wenmo-test-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (venv / ".wenmo-requirements").write_text(requirements_hash(os.environ.get("WENMO_DEPLOY_PIP_ARGS", "")) + "\n")


class Installation:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = root / "p"
        self.port = free_port()
        self.args = ["--demo", "--no-systemd", "--prefix", str(self.prefix), "--port", str(self.port),
                     "--python", str(BASE_PYTHON)]
        if IS_ROOT:
            self.args += ["--user", "root"]  # no account is added to the system; the service user is not the point
        self.etc = self.prefix / "etc"
        self.cred = self.etc / "credentials" / "wenmo-auth"
        self.base = f"http://127.0.0.1:{self.port}"
        self.venv_python = str(self.prefix / "venv" / "bin" / "python")

    def run(self, *extra: str, script: Path = DEPLOY, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(script), *self.args, *extra], cwd=script.parent, env=clean_env(), capture_output=True,
                           text=True, timeout=timeout)
        text = output(r)
        assert r.returncode == 0, text[-6000:]
        assert "up to date with requirements.txt (reused)" in text, "deploy.sh rebuilt the virtualenv:\n" + text[-3000:]
        assert "Wenmo is running and ready" in text
        return r

    def login(self) -> str:
        return self.cred.read_text().strip()

    def launcher_pids(self) -> list[int]:
        return launcher_pids(self.prefix)

    def app_pids(self) -> list[int]:
        return pids_of(self.venv_python, "-m", "app", "serve")


@pytest.fixture(scope="module")
def installed():
    root = Path(tempfile.mkdtemp(prefix="wenmo-deploy-promises-", dir="/tmp"))
    root.chmod(0o755)
    inst = Installation(root)
    try:
        seed_virtualenv(inst.prefix / "venv")
        inst.run(timeout=600)
        yield inst
    finally:
        deploy("uninstall", "--purge", "--prefix", str(inst.prefix), timeout=180)
        for pid in inst.launcher_pids() + inst.app_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


# ---- the password ---------------------------------------------------------------------------------------
def test_rotate_password_makes_a_new_one_and_the_service_restarts_with_it(installed):
    before = installed.login()
    user, old = before.split(":", 1)
    assert http(installed.base + "/metrics", auth=before)[0] == 200

    r = installed.run("--rotate-password")
    text = output(r)
    after = installed.login()
    new_user, new = after.split(":", 1)
    assert new_user == user == "wenmo"
    assert new != old and len(new) == 24 and re.fullmatch(r"[A-Za-z0-9]+", new)
    assert f"password: rotated (the new one is in {installed.cred})" in text
    assert new not in text and old not in text  # never in the output
    assert oct(installed.cred.stat().st_mode & 0o777) == oct(0o600)
    # The running service took the new one (its own copy is refreshed at start), and only the new one.
    assert http(installed.base + "/metrics", auth=after)[0] == 200
    assert http(installed.base + "/metrics", auth=before)[0] == 401
    assert (installed.prefix / "run" / "wenmo-auth").read_text().strip() == after
    assert len(installed.launcher_pids()) == 1 and len(installed.app_pids()) == 1

    # A plain re-run keeps it.
    kept = installed.run()
    assert "password: kept" in output(kept) and installed.login() == after


# ---- the commands the summary prints ----------------------------------------------------------------------
def test_the_printed_password_and_try_it_commands_work_as_printed(installed):
    """Issue 13: the printed commands used `sudo` (none in a container, as root) and must run exactly as shown."""
    r = installed.run()
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (password|try it) +(.+)$", r.stdout, re.M)}
    env = {k: v for k, v in clean_env().items() if k != "SUDO_USER"}
    password = subprocess.run(["bash", "-c", lines["password"]], capture_output=True, text=True, env=env)
    assert password.returncode == 0 and password.stdout.strip() == installed.login().split(":", 1)[1]
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the printed try-it command not run")
    tried = subprocess.run(["bash", "-c", lines["try it"] + " --noproxy '*' -s"], capture_output=True, text=True,
                           env=env)
    assert tried.returncode == 0, tried.stderr
    assert len(json.loads(tried.stdout)["data"][0]["embedding"]) > 0


# ---- hand edits of wenmo.env ----------------------------------------------------------------------------
def test_a_hand_edit_of_wenmo_env_moves_to_the_override_file_with_a_bak(installed):
    gen = installed.etc / "wenmo.env"
    override = installed.etc / "wenmo.override.env"
    text = gen.read_text()
    assert "\nWENMO_MAX_BATCH_SIZE=32\n" in text  # the CPU profile's value, generated
    edited = text.replace("\nWENMO_MAX_BATCH_SIZE=32\n", "\nWENMO_MAX_BATCH_SIZE=7\n")
    gen.write_text(edited)

    r = installed.run()
    said = output(r)
    assert f"{gen} was edited by hand (WENMO_MAX_BATCH_SIZE=7): moving that to {override}" in said
    assert f"your edited wenmo.env is kept as {gen}.bak" in said
    assert (installed.etc / "wenmo.env.bak").read_text() == edited
    # The value now lives in exactly one place, the override file, with a comment saying where it came from.
    ours = override.read_text()
    assert "\nWENMO_MAX_BATCH_SIZE=7\n" in ours + "\n"
    moved = r"# moved from wenmo.env, where it was edited by hand \(\d{4}-\d{2}-\d{2}\)\nWENMO_MAX_BATCH_SIZE=7"
    assert re.search(moved, ours), ours
    regenerated = gen.read_text()
    assert "WENMO_MAX_BATCH_SIZE" not in env_keys(gen)
    assert "# WENMO_MAX_BATCH_SIZE: set in wenmo.override.env (7)" in regenerated
    for path in (gen, override):
        keys = env_keys(path)
        assert len(keys) == len(set(keys)), path
    # The service runs with the moved value.
    [app] = installed.app_pids()
    environ = dict(x.split("=", 1) for x in Path(f"/proc/{app}/environ").read_bytes().decode().split("\0") if "=" in x)
    assert environ["WENMO_MAX_BATCH_SIZE"] == "7"

    # Nothing edited since: the next run moves nothing and leaves the .bak alone.
    again = installed.run()
    assert "was edited by hand" not in output(again)
    assert override.read_text() == ours


# ---- ds_config.json on upgrade --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def upgraded_checkout(installed):
    """A copy of this checkout whose ds_config.json default differs (a new release), requirements unchanged."""
    src = installed.root / "next-release"
    src.mkdir()
    for item in ("app", "launcher", "bench", "deploy.sh", "requirements.txt", "pyproject.toml", "README.md"):
        if (ROOT / item).is_dir():
            shutil.copytree(ROOT / item, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif (ROOT / item).exists():
            shutil.copy2(ROOT / item, src / item)
    config = json.loads((ROOT / "ds_config.json").read_text())
    config["inference"]["enable_cuda_graph"] = not config["inference"]["enable_cuda_graph"]
    (src / "ds_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return src


def test_ds_config_follows_upgrades_until_edited_then_the_new_default_goes_beside_it(installed, upgraded_checkout):
    installed_ds = installed.etc / "ds_config.json"
    new_beside = installed.etc / "ds_config.json.new"
    ours, theirs = (ROOT / "ds_config.json").read_text(), (upgraded_checkout / "ds_config.json").read_text()
    # From whatever state earlier tests left: install this checkout's default, not edited.
    installed_ds.write_text(ours)
    (installed.etc / ".ds_config.json.dist").write_text(ours)
    new_beside.unlink(missing_ok=True)

    # Not edited: the upgrade replaces it, and nothing is left beside it.
    r = installed.run(script=upgraded_checkout / "deploy.sh")
    assert installed_ds.read_text() == theirs
    assert not new_beside.exists()
    assert "keeping your edited" not in output(r)

    # Edited: the next upgrade (here back to this checkout's default) keeps the edit, and leaves the new default
    # beside it.
    edited = json.loads(theirs)
    edited["fp16"]["enabled"] = False
    edited_text = json.dumps(edited, indent=2) + "\n"
    installed_ds.write_text(edited_text)
    r = installed.run()
    assert installed_ds.read_text() == edited_text
    assert new_beside.read_text() == ours
    assert f"keeping your edited {installed_ds}; the new default is {new_beside}" in output(r)
    # The service reads the edited file (WENMO_DS_CONFIG points at it).
    assert f"WENMO_DS_CONFIG={installed_ds}" in (installed.etc / "wenmo.env").read_text()


# ---- status ---------------------------------------------------------------------------------------------
def status(inst: Installation) -> subprocess.CompletedProcess[str]:
    return deploy("status", "--prefix", str(inst.prefix), timeout=120)


def test_status_exit_codes_ready_running_but_not_ready_and_stopped(installed):
    ready = status(installed)
    assert ready.returncode == 0, output(ready)
    assert f"readiness: GET http://127.0.0.1:{installed.port}/readyz -> HTTP 200" in ready.stdout

    # A hung app (stopped by a signal: it still holds the port but answers nothing), with its launcher stopped
    # too so that the watchdog does not replace it while we look: running, not ready.
    [launcher] = installed.launcher_pids()
    [app] = installed.app_pids()
    os.kill(launcher, signal.SIGSTOP)
    os.kill(app, signal.SIGSTOP)
    try:
        hung = status(installed)
    finally:
        os.kill(app, signal.SIGCONT)
        os.kill(launcher, signal.SIGCONT)
    assert hung.returncode == 1, output(hung)
    assert f"launcher: running in the background, pid {launcher}" in hung.stdout
    assert "/readyz -> no answer" in hung.stdout

    deadline = time.monotonic() + 120
    while status(installed).returncode != 0:
        assert time.monotonic() < deadline, "not ready again after SIGCONT"
        time.sleep(1)

    stop = deploy("stop", "--prefix", str(installed.prefix), timeout=180)
    assert stop.returncode == 0, output(stop)
    try:
        stopped = status(installed)
        assert stopped.returncode == 3, output(stopped)
        assert "launcher: not running" in stopped.stdout
    finally:
        start = deploy("start", "--prefix", str(installed.prefix), timeout=300)
        assert start.returncode == 0, output(start)
    assert status(installed).returncode == 0


# ---- the unit's credential fallbacks --------------------------------------------------------------------
@pytest.mark.parametrize(("version", "expected", "absent"), [
    ("255", "Environment=WENMO_AUTH_FILE=%d/wenmo-auth", "EnvironmentFile={cred_dir}/wenmo-auth.env"),
    ("249", "Environment=WENMO_AUTH_FILE=/run/credentials/%n/wenmo-auth", "EnvironmentFile={cred_dir}/wenmo-auth.env"),
    ("245", "EnvironmentFile={cred_dir}/wenmo-auth.env", "LoadCredential="),
])
def test_the_unit_hands_the_password_over_as_this_systemd_can(version, expected, absent):
    """systemd ≥ 251 expands %d to the credentials directory; 247–250 know credentials but not %d; before 247
    the password goes through a root-only EnvironmentFile as WENMO_AUTH."""
    tmp_path = Path(tempfile.mkdtemp(prefix="wenmo-deploy-unit-", dir="/tmp"))  # one the service user can enter
    tmp_path.chmod(0o755)
    try:
        check_unit(tmp_path, version, expected, absent)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def check_unit(tmp_path: Path, version: str, expected: str, absent: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = f"#!/bin/sh\n[ \"$1\" = --version ] && echo 'systemd {version} (test)'\nexit 0\n"
    (bin_dir / "systemctl").write_text(fake)
    (bin_dir / "systemctl").chmod(0o755)
    prefix = tmp_path / "p"
    r = deploy("--dry-run", "--demo", "--systemd", "--prefix", str(prefix), "--port", str(free_port()),
               env=clean_env({"WENMO_DEPLOY_NVIDIA_SMI": "/nonexistent/nvidia-smi"}, path_prefix=bin_dir))
    text = output(r)
    assert r.returncode == 0, text
    unit = re.search(r"^----- /etc/systemd/system/wenmo.service -----\n(.*?)\n----- end of ", r.stdout, re.S | re.M)
    assert unit, text
    lines = unit.group(1).splitlines()
    cred_dir = prefix / "etc" / "credentials"
    assert expected.format(cred_dir=cred_dir) in lines
    assert not any(x.startswith(absent.format(cred_dir=cred_dir)) for x in lines)
    assert "WENMO_AUTH=" not in unit.group(1)  # the password itself is never in the unit
    if version == "245":
        assert f"would write {cred_dir}/wenmo-auth.env (0600): WENMO_AUTH from {cred_dir}/wenmo-auth" in text
    else:
        assert f"LoadCredential=wenmo-auth:{cred_dir}/wenmo-auth" in lines
