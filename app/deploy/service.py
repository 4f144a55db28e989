"""The running service as deploy.sh sees it: is the launcher running, is the app ready, the status report, and
waiting until ready (or until it is clear that it will not be)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from app.deploy import Stop
from app.deploy.probes import http_status


def launcher_pid(pid_file: Path) -> str | None:
    """The launcher's PID while it runs: it holds a lock on its pid file (launcher/daemon.py), so a held lock
    means running, whatever PID was reused since."""
    try:
        fd = os.open(pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)


def systemd_state(service: str) -> str:
    return subprocess.run(["systemctl", "is-active", service], capture_output=True, text=True).stdout.strip()


def status(mode: str, service: str, pid_file: Path, log_file: Path, url: str, state_dir: Path) -> int:
    """deploy.sh status: 0 ready, 1 running but not ready, 3 stopped."""
    if mode == "systemd":
        sys.stdout.flush()
        subprocess.run(["systemctl", "status", service, "--no-pager", "-n", "0"])
        rc = 0 if systemd_state(service) == "active" else 3
    elif pid := launcher_pid(pid_file):
        print(f"launcher: running in the background, pid {pid} (log {log_file})")
        rc = 0
    else:
        print(f"launcher: not running (no launcher holds {pid_file})")
        rc = 3
    code = http_status(url)
    print(f"readiness: GET {url} -> {'no answer' if code == '000' else f'HTTP {code}'}")
    report = state_dir / "launcher-status.json"
    if os.access(report, os.R_OK):
        print(f"launcher status ({report}):\n{report.read_text().rstrip()}")
    return rc or (0 if code == "200" else 1)


def wait_ready(url: str, wait_s: int, mode: str, service: str, pid_file: Path, log_file: Path, prog: str,
               dry_run: bool = False) -> str:
    """Poll `url` every 2 s until it answers 200; stop when the service has stopped or `wait_s` has passed."""
    if dry_run:
        return f"    would wait up to {wait_s} s for {url} to answer 200\n"
    print(f"    waiting for {url} (loading the models)", flush=True)
    waited, last = 0, -15
    while (code := http_status(url)) != "200":
        if mode == "systemd" and (state := systemd_state(service)) in ("failed", "inactive"):
            subprocess.run(["journalctl", "-u", service, "-n", "40", "--no-pager"], stdout=sys.stderr)
            raise Stop(f"the service stopped ({state}) before it was ready; its last log lines are above",
                       f"full log: {prog} logs; fix the cause and re-run {prog}")
        if mode != "systemd" and launcher_pid(pid_file) is None:
            subprocess.run(["tail", "-n", "40", str(log_file)], stdout=sys.stderr)
            raise Stop(f"the launcher stopped before the app was ready; the end of {log_file} is above",
                       f"fix the cause and re-run {prog}")
        if waited >= wait_s:
            raise Stop(f"not ready after {wait_s} s (last answer: {code})",
                       f"it may still be loading: watch {prog} logs -f, then {prog} status; --wait-s waits longer")
        if waited - last >= 15:
            print(f"    ... {waited} s, /readyz: {code}", flush=True)
            last = waited
        time.sleep(2)
        waited += 2
    return f"    ready after {waited} s: {url.removesuffix('readyz')}\n"
