"""One `python -m app serve` child of a measuring tool (bench-batching, soak): started in its own session, so
stopping it stops its whole process group, its output in a log file, every wait bounded. While it runs, SIGTERM
and SIGHUP to the tool end the tool through its `finally` blocks, so the server is stopped with it: in its own
session it does not get the tool's signals, and a soak stopped with `kill` left its server running (2026-11-28)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from app.config import REPO_ROOT

STOP_TIMEOUT_S = 60.0  # SIGTERM, then this long for the drain and exit, then SIGKILL


def serve_env(base: Mapping[str, str], settings_env: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """A serve child's environment: the caller's, then the settings given to the tool as flags (as WENMO_*
    variables), then what the tool decides (`own`); this checkout first on PYTHONPATH, no hub and no analytics
    calls unless the caller says otherwise."""
    env = dict(base)
    env.update(settings_env)
    env.update(own)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # the shell's status for a process a signal ended


class ServerChild:
    """`label` names the server in messages: what sets it apart (`WENMO_BATCH_ACROSS_REQUESTS=on`)."""

    def __init__(self, label: str, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.label = label
        self.log_path = log_path
        # Before the child exists: a signal between its start and the handler would leave it running.
        self._handlers: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            self._handlers = {sig: signal.signal(sig, _exit_on_signal) for sig in STOPPING_SIGNALS}
        try:
            self._log = log_path.open("wb")
            self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve", *args], cwd=REPO_ROOT, env=env,
                                         stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            self._restore_handlers()
            raise

    def gone(self) -> str | None:
        """Why the server cannot answer any more (it exited), or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        return (f"the server with {self.label} exited with status {code}; the end of its log "
                f"({self.log_path}):\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM to the group, STOP_TIMEOUT_S for the drain, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()
        self._restore_handlers()
        return self.proc.returncode

    def _restore_handlers(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._handlers = {}
