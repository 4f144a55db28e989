"""The watchdog counts the app's own processes, not its tune jobs (launcher/probes.py `app_tree`): real process
trees, real resident memory. A child running `python -m app tune …` (here a stand-in package named `app` in a
temporary folder, so the command line is the real one) holds 300 MiB and the launcher, with a 150 MiB threshold,
keeps the app; the same child under another command line gets the app restarted for memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from launcher_harness import LauncherProcess, free_port, wait_until

from launcher.events import MEMORY_FILE
from launcher.probes import RssProbe, app_tree, process_tree, runs_tune

MIB = 2**20

BIG_CHILD = """
import sys, time
block = b"x" * (300 * 2**20)  # written, so resident
open(sys.argv[-1], "w").write("up")
time.sleep(600)
"""

# The supervised app: answers /readyz, and starts the big child with the command line it is given.
APP = r"""
import subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, cwd, argv = int(sys.argv[2]), sys.argv[3], sys.argv[4:]  # --port N CWD ARGV...
subprocess.Popen(argv, cwd=cwd)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever(poll_interval=0.05)
"""


def big_child_argv(tmp_path: Path, marked: bool, up: Path) -> list[str]:
    """`python -m app tune --train x <up>` (a package `app` in tmp_path whose __main__ is the big child), or the
    same program as a plain script."""
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "__main__.py").write_text(BIG_CHILD)
    (tmp_path / "big.py").write_text(BIG_CHILD)
    if marked:
        return [sys.executable, "-m", "app", "tune", "--train", "x", str(up)]
    return [sys.executable, str(tmp_path / "big.py"), "--train", "x", str(up)]


def test_command_lines_of_tune_jobs():
    assert runs_tune(["/usr/bin/python3", "-m", "app", "tune", "--model", "embed"])
    assert runs_tune(["/opt/wenmo/.venv/bin/python", "/opt/wenmo/.venv/bin/wenmo", "tune", "--demo"])
    assert runs_tune(["wenmo", "tune"])
    assert not runs_tune(["/usr/bin/python3", "-m", "app", "serve", "--demo"])
    assert not runs_tune(["python", "app", "tune"])  # a script named app, not the module
    assert not runs_tune(["python", "-m", "app", "embed", "tune"])  # "tune" as a text to embed
    assert not runs_tune(["python", "-m", "app"])
    assert not runs_tune(["python", "parent.py", "python", "-m", "app", "tune"])  # a script given those words
    assert runs_tune(["python3", "-u", "-m", "app", "tune"])


@pytest.mark.parametrize("marked", [True, False], ids=["tune-job", "plain-child"])
def test_rss_probe_leaves_out_a_tune_job_and_its_descendants(tmp_path: Path, marked: bool) -> None:
    up = tmp_path / "up"
    script = tmp_path / "parent.py"
    script.write_text("import subprocess, sys, time\nsubprocess.Popen(sys.argv[2:], cwd=sys.argv[1])\n"
                      "time.sleep(600)\n")
    argv = big_child_argv(tmp_path, marked, up)
    root = subprocess.Popen([sys.executable, str(script), str(tmp_path), *argv], start_new_session=True)
    try:
        assert wait_until(up.exists, 30)
        everything = process_tree(root.pid)
        assert len(everything) == 2
        sample = RssProbe().sample(root.pid)
        if marked:
            assert sample.pids == (root.pid,) and sample.used_bytes < 100 * MIB
            assert [p.pid for p in app_tree(root.pid)] == [root.pid]
        else:
            assert sorted(sample.pids) == sorted(p.pid for p in everything) and sample.used_bytes > 300 * MIB
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(root.pid, signal.SIGKILL)
        root.wait(timeout=10)


def test_a_tune_jobs_descendants_are_left_out_with_it(tmp_path: Path) -> None:
    """DeepSpeed's workers, or anything else a tune job starts, are the job's, not the app's."""
    up = tmp_path / "up"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "__main__.py").write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'big.py')!r}, {str(up)!r}])\ntime.sleep(600)\n")
    (tmp_path / "big.py").write_text(BIG_CHILD)
    root = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                             "subprocess.Popen([sys.executable, '-m', 'app', 'tune'])\ntime.sleep(600)"],
                            cwd=tmp_path, start_new_session=True)
    try:
        assert wait_until(up.exists, 30)
        assert len(process_tree(root.pid)) == 3
        sample = RssProbe().sample(root.pid)
        assert sample.pids == (root.pid,) and sample.used_bytes < 100 * MIB
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(root.pid, signal.SIGKILL)
        root.wait(timeout=10)


FAST = ["--probe", "rss", "--poll-s", "0.2", "--health-timeout-s", "5", "--startup-timeout-s", "20",
        "--backoff-initial-s", "0.1", "--release-timeout-s", "5", "--threshold-mib", "150", "--consecutive", "2",
        "--grace-s", "0.5", "--drain-s", "2"]


@pytest.mark.parametrize("marked", [True, False], ids=["tune-job", "plain-child"])
def test_the_launcher_restarts_for_an_apps_big_child_but_not_for_its_tune_job(tmp_path: Path, marked: bool) -> None:
    up = tmp_path / "up"
    (tmp_path / "fake_app.py").write_text(APP)
    port = free_port()
    command = ["--", sys.executable, str(tmp_path / "fake_app.py"), "--port", str(port), str(tmp_path),
               *big_child_argv(tmp_path, marked, up)]
    with LauncherProcess([*FAST, *command], tmp_path) as run:
        run.wait_for("ready", timeout_s=30)
        assert wait_until(up.exists, 30)
        if not marked:
            restart = run.wait_for("restart", timeout_s=30)
            assert restart["reason"] == "memory" and restart["used_mib"] > 300
            return
        # Samples taken while the 300 MiB tune job runs (it is up before the count starts): many more than the
        # grace and the 2 consecutive samples a restart needs.
        memory = run.state_dir / MEMORY_FILE

        def samples() -> list[dict]:
            lines = memory.read_text().splitlines() if memory.exists() else []
            return [json.loads(line) for line in lines if line.strip()]

        before = len(samples())
        assert wait_until(lambda: len(samples()) >= before + 20, 60)
        assert max(s["used_mib"] for s in samples()) < 150
        assert not run.named("restart") and not run.named("sample_over_threshold")
