"""Run `python -m app serve` as a real subprocess on a free port (vLLM's RemoteOpenAIServer, in spirit).

Every wait is bounded; `close()` SIGKILLs the process group if a polite stop did not end it. The server's
stdout and stderr go to a log file in its state directory (a pipe nobody reads could block it).

`shared_server(config)` starts one server per pytest session, shared by tests/server and tests/browser,
and stops it when the session ends (a fixture in each directory's conftest would start two).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "user", "pass"
READY_TIMEOUT_S = 120.0
# The shared server: one slot and a queue of two make "busy" easy to reach; a 1 MiB body cap makes the
# oversized-upload case cheap.
SHARED_ARGS = ("--max-concurrent", "1", "--max-queue", "2", "--max-upload-mib", "1", "--drain-s", "5")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without WENMO_* settings from the developer's shell, nor the variable that tells the
    server it runs in a Kubernetes pod (a CI runner may be one; there the server refuses to generate a password)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_") and k != "KUBERNETES_SERVICE_HOST"}
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    env.update(extra or {})
    return env


def basic_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def seed_demo_models(state_dir: Path, template: Path | None) -> None:
    """Copy the tiny demo checkpoints another server already built (saves ~4 s of building per server)."""
    if template is not None and (template / "demo-models" / ".complete").exists():
        shutil.copytree(template / "demo-models", state_dir / "demo-models", dirs_exist_ok=True)


class WenmoServer:
    def __init__(self, state_dir: Path, args: Sequence[str] = (), *, auth: str | None = f"{USER}:{PASSWORD}",
                 env: dict[str, str] | None = None, host: str = "127.0.0.1", demo: bool = True,
                 template: Path | None = None) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        seed_demo_models(state_dir, template)
        self.port = free_port()
        self.host = host
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = tuple(auth.split(":", 1)) if auth else None
        extra = dict(env or {})
        if auth:
            extra["WENMO_AUTH"] = auth
        self.log_path = state_dir / "server.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "app", "serve", "--host", host, "--port", str(self.port),
               "--state-dir", str(state_dir), *(["--demo"] if demo else []), *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=clean_env(extra), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    # ---- waiting ----------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> WenmoServer:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before ready:\n{self.logs()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.logs()[-3000:]}")

    def wait_exit(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    # ---- talking to it ----------------------------------------------------------------------------
    def client(self, timeout_s: float = 60.0, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=timeout_s, **kwargs)

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def close(self) -> None:
        """SIGTERM, then SIGKILL to the whole group after a few seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


_SHARED: dict[str, WenmoServer] = {}


def shared_server(config: Any, tmp_root: Path) -> WenmoServer:
    """One demo server for the whole session (tests/server and tests/browser), stopped at session end."""
    if "server" not in _SHARED:
        server = WenmoServer(tmp_root / "shared-state", SHARED_ARGS)
        config.add_cleanup(server.close)
        try:
            server.wait_ready()
        except Exception:
            server.close()
            raise
        _SHARED["server"] = server
    return _SHARED["server"]
