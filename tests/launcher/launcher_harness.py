"""Test harness: run ``python -m launcher`` as a real subprocess and read its JSON events from stdout.

Every wait is bounded; ``close()`` stops the launcher and SIGKILLs the process group of every app it
started (they run in their own sessions, so killing the launcher alone would orphan them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event_time(event: Event) -> float:
    """Epoch seconds of an event's ``ts`` (ISO 8601 UTC with a trailing Z)."""
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without WENMO_* settings that could leak in from the developer's shell, nor
    KUBERNETES_SERVICE_HOST (a CI runner in a pod: the app would refuse to generate a password)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_") and k != "KUBERNETES_SERVICE_HOST"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class LauncherProcess:
    def __init__(self, args: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = workdir / "state"
        self.stderr_path = workdir / "launcher-stderr.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--state-dir", str(self.state_dir), *args],
            cwd=REPO_ROOT,
            env=env if env is not None else clean_env(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.events: list[Event] = []
        self.raw_lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.raw_lines.append(line)
                with contextlib.suppress(json.JSONDecodeError):  # the app's own output is not ours
                    self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # ---- queries ---------------------------------------------------------------------------------

    def named(self, name: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    def names(self) -> list[str]:
        with self._cond:
            return [str(e.get("event")) for e in self.events]

    def wait_for(
        self,
        name: str,
        timeout_s: float,
        match: Callable[[Event], bool] | None = None,
        count: int = 1,
    ) -> Event:
        """The ``count``-th event called ``name`` (matching ``match``); fails with the log on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = [e for e in self.events if e.get("event") == name and (match is None or match(e))]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(f"no {name!r} event #{count} within {timeout_s} s\n{self.describe()}")

    def wait_exit(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher still running after {timeout_s} s\n{self.describe()}") from None
        self._reader.join(timeout=5)
        return code

    def child_pids(self) -> list[int]:
        return [int(e["pid"]) for e in self.named("start")]

    def describe(self) -> str:
        with self._cond:
            lines = "".join(self.raw_lines[-60:])
        stderr = self.stderr_path.read_text(errors="replace")[-3000:] if self.stderr_path.exists() else ""
        return f"--- launcher stdout (last lines) ---\n{lines}--- launcher stderr ---\n{stderr}"

    # ---- teardown --------------------------------------------------------------------------------

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in self.child_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> LauncherProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a reaped child is gone; an unreaped one is dead for our purposes)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


# ---- a child to supervise ------------------------------------------------------------------------
# Each child serves ``/readyz`` on a free port and appends what happens to it ("start", "sigterm", "exit") to a
# log file, so a test can check what the child saw, not only what the launcher said. Only the first incarnation
# misbehaves (grows, hangs), so a restart can be seen to fix things; the crashing child crashes every time. The
# hanging child stops answering after a number of answers, not after a time.

CHILD_SCRIPT = r"""
import argparse, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--mode", choices=["ok", "grow", "crash", "hang"], default="ok")
p.add_argument("--log", required=True)
p.add_argument("--grow-mib", type=int, default=300)
p.add_argument("--grow-on", choices=["host", "cuda"], default="host")  # cuda: torch tensors on the GPU (tests/gpu)
p.add_argument("--hang-after-answers", type=int, default=3)
args = p.parse_args()

log = Path(args.log)
def record(line):
    with log.open("a") as f:
        f.write(line + "\n")

previous = log.read_text().splitlines() if log.exists() else []
incarnation = 1 + sum(1 for line in previous if line.startswith("start "))
record(f"start {os.getpid()} {incarnation}")
if args.mode == "crash":
    time.sleep(0.1)
    sys.exit(1)
mode = args.mode if incarnation == 1 else "ok"
answers = 0

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global answers
        if mode == "hang" and answers >= args.hang_after_answers:
            time.sleep(3600)  # readiness stops answering
        answers += 1
        body = b"ok"
        self.send_response(200 if self.path in ("/readyz", "/healthz") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
server.daemon_threads = True

def on_term(signum, frame):
    record(f"sigterm {os.getpid()}")
    if mode == "hang":
        return  # a hung app does not drain: the launcher has to SIGKILL it
    threading.Thread(target=server.shutdown).start()
signal.signal(signal.SIGTERM, on_term)

def grow():
    blocks = []
    if args.grow_on == "cuda":
        import torch
    while len(blocks) * 10 < args.grow_mib:
        if args.grow_on == "cuda":
            blocks.append(torch.ones(10 * 2**20, dtype=torch.uint8, device="cuda"))
            torch.cuda.synchronize()
        else:
            blocks.append(b"x" * (10 * 2**20))  # written, so resident
        time.sleep(0.02)
    while True:
        time.sleep(1)
if mode == "grow":
    threading.Thread(target=grow, daemon=True).start()

server.serve_forever(poll_interval=0.05)
record(f"exit {os.getpid()}")
"""


def child_command(tmp_path: Path, mode: str, port: int, *extra: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD_SCRIPT)
    return [
        "--",
        sys.executable,
        str(script),
        "--port",
        str(port),
        "--mode",
        mode,
        "--log",
        str(tmp_path / "child.log"),
        *extra,
    ]


def child_log(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "child.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []
