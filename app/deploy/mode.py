"""How the service runs: a systemd unit where systemd is PID 1, else the launcher alone (--no-systemd), and who
may install it that way. deploy.sh evaluates the shell assignments `decide` returns (values quoted by shlex)."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
from pathlib import Path

from app.deploy import Stop


def systemd_version() -> str:
    if shutil.which("systemctl") is None:
        return ""
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout.split()
    return out[1] if len(out) > 1 else ""


def decide(asked: str, user: str, prefix: Path, prog: str, args: str, dry_run: bool) -> str:
    """`asked`: systemd, background or '' (the flag, else the installation's record)."""
    lines, root, me = [], os.geteuid() == 0, pwd.getpwuid(os.geteuid()).pw_name
    running = Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None  # sd_booted()
    version = systemd_version()
    mode = asked or ("systemd" if running else "background")
    if running and mode == "systemd":
        lines.append(f"systemd: {version}")
    elif not running and not asked:
        pid1 = Path("/proc/1/comm").read_text().strip() if Path("/proc/1/comm").exists() else "not systemd"
        lines += [f"systemd is not running here (PID 1 is {pid1}; a container?):",
                  "the launcher runs as a background process instead (--no-systemd): pid file, log file, no restart "
                  "at boot"]
    if mode == "systemd" and user == "root":
        raise Stop("--user root: the service must run as an unprivileged user",
                   "leave --user out (a 'wenmo' user is created)")
    if not root and dry_run:
        lines.append("not root: fine for --dry-run")
    elif not root and mode == "systemd":
        raise Stop("installing a systemd service needs root", f"run: sudo {prog} {args}",
                   "(or, without root, --no-systemd --prefix DIR in a directory you own)")
    elif not root and user != me:
        raise Stop(f"--user {user} needs root (without root the service runs as you, {me})")
    out = [f"say {shlex.quote(line)}" for line in lines]
    if mode == "systemd" and not running:
        if not dry_run:
            raise Stop("systemd is not running on this machine (a container?), and --systemd was asked for",
                       f"run the launcher as a background process instead: {prog} --no-systemd")
        out.append("warn 'systemd is not running on this machine: a real run would stop here (use --no-systemd)'")
    state_dir = "/var/lib/wenmo" if mode == "systemd" else f"{prefix}/state"
    out.append(f"MODE={mode} SYSTEMD_VERSION={shlex.quote(version)} STATE_DIR={shlex.quote(state_dir)}")
    return "\n".join(out) + "\n"
