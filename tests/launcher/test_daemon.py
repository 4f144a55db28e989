"""Without systemd the launcher is the process manager: --pid-file (a lock while it runs) and --log-file
(detached into the background). Real processes: the launcher runs a small HTTP server as its app."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = "import http.server, sys; http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), " \
      "http.server.SimpleHTTPRequestHandler).serve_forever()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lock_held(path: Path) -> bool:
    """What deploy.sh asks (`flock -n FILE true` fails), without creating the file when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def launch(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "launcher", "--state-dir", str(tmp_path / "state"), *extra, "--",
                           sys.executable, "-c", APP, str(port)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def wait_for(predicate, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_detached_launcher_holds_its_pid_file_refuses_a_second_and_stops_its_app_on_sigterm(tmp_path):
    pid_file, log = tmp_path / "wenmo.pid", tmp_path / "wenmo.log"
    first = launch(tmp_path, "--pid-file", str(pid_file), "--log-file", str(log))
    assert first.returncode == 0, first.stderr
    pid = int(pid_file.read_text())
    try:
        assert lock_held(pid_file)
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"launcher"]
        assert os.getsid(pid) == pid  # its own session: the terminal that started it can go
        assert wait_for(lambda: '"event": "start"' in log.read_text() or '"event":"start"' in log.read_text())
        second = launch(tmp_path, "--pid-file", str(pid_file))
        assert second.returncode == 2 and f"another launcher (pid {pid}) holds {pid_file}" in second.stderr
        assert int(pid_file.read_text()) == pid
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not lock_held(pid_file))
    assert not pid_file.exists()


def test_the_app_does_not_outlive_a_killed_launcher(tmp_path):
    """SIGKILL leaves no drain to the launcher: the app gets SIGTERM from the kernel (PDEATHSIG) and exits."""
    pid_file, log = tmp_path / "wenmo.pid", tmp_path / "wenmo.log"
    assert launch(tmp_path, "--pid-file", str(pid_file), "--log-file", str(log)).returncode == 0
    pid = int(pid_file.read_text())
    status = tmp_path / "state" / "launcher-status.json"
    assert wait_for(lambda: status.exists() and '"child_pid": null' not in status.read_text()
                    and '"child_pid"' in status.read_text())
    child = json.loads(status.read_text())["child_pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not Path(f"/proc/{child}").exists() or
                    Path(f"/proc/{child}/stat").read_text().split()[2] == "Z")
    assert not lock_held(pid_file)
