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
