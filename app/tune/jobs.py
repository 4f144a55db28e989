"""Tune jobs for a long-lived process (the web app): one at a time, each `python -m app tune … --events FILE` in a
child process of its own process group, followed through its events file, cancellable.

    jobs = TuneJobs(settings)
    job_id = jobs.start("embed", "train.jsonl", "eval.jsonl", demo=False, options={"epochs": 2})
    jobs.state()   # {"job_id", "role", "status", "step", "steps", "losses", "before", "after", "out", "report",
                   #  "message", …}; status: idle | running | done | failed | cancelled
    jobs.cancel()  # SIGTERM to the job's group: it stops between steps, removes its partial checkpoint, exits 143

Training never runs inside the serving process: a crash or an out-of-memory there ends the job, not the server.
A job's files (events.jsonl, its stderr as log.txt) live under `<state dir>/tune-jobs/<job_id>/`; the folders of
all but the newest `tune_keep_jobs` are removed when a job starts (`prune_folders`), so a server tuning for months
does not fill its disk.
The child gets the settings that decide where models and files are (`--state-dir`, `--model-dir`,
`--ds-config`, `--device`, `--log-level`) as flags, so a server started with flags tunes what it serves.
Imports nothing heavy: no torch in the server's thread that starts a job.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from app.config import REPO_ROOT, Settings
from app.errors import ConflictError, InputError
from app.tune.events import EventReader
from app.tune.trainable import EMBED_LOSSES, ROLES

STATUSES = ("idle", "running", "done", "failed", "cancelled")
KILL_AFTER_S = 30.0  # a job that has not stopped this long after SIGTERM gets SIGKILL (no partial checkpoint either)
# options → the tune command's flags (the same names, dashes for underscores)
OPTION_FLAGS = {"out": "--out", "report": "--report", "epochs": "--epochs", "steps": "--steps",
                "batch_size": "--batch-size", "lr": "--lr", "loss": "--loss", "seed": "--seed",
                "source": None}
SETTINGS_FLAGS = ("state_dir", "model_dir", "ds_config", "device", "dtype", "log_level", "max_length")


def prune_folders(root: Path, keep: int, *, keep_also: Path) -> list[Path]:
    """Remove all but the newest `keep` folders in `root` (by modification time; `keep_also`, the one just made,
    always stays): the files of finished jobs. Called when a job starts, so none of them is running. Returns what
    went."""
    folders = sorted((p for p in root.iterdir() if p.is_dir() and p != keep_also),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    gone = folders[max(0, keep - 1):]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


class TuneJobs:
    def __init__(self, settings: Settings | None = None, *, python: str = sys.executable) -> None:
        self.settings = settings or Settings()
        self.python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: EventReader | None = None
        self._state: dict[str, Any] = self._blank("idle")
        self._cancel_sent: float | None = None
        self._final: str | None = None  # the last event that ends a job: done, error or cancelled
        self._log: Any = None

    # ---- public -------------------------------------------------------------------------------------------
    def start(self, role: str, train_path: str | Path, eval_path: str | Path, *, demo: bool,
              options: dict[str, Any] | None = None) -> str:
        """Start a job; its id. A job already running → ConflictError (cancel it or wait for it)."""
        options = dict(options or {})
        with self._lock:
            self._refresh()
            if self._state["status"] == "running":
                raise ConflictError(f"a tune job is running ({self._state['job_id']}, step {self._state['step']}"
                                      f" of {self._state['steps'] or '?'}); wait for it or cancel it first")
            command = self.command(role, train_path, eval_path, demo=demo, options=options)
            job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            folder = Path(self.settings.state_dir).expanduser() / "tune-jobs" / job_id
            folder.mkdir(parents=True, exist_ok=True)
            self.prune(folder.parent, folder)
            events = folder / "events.jsonl"
            command += ["--events", str(events)]
            self._log = open(folder / "log.txt", "wb")  # noqa: SIM115 - the child writes it; closed when it ends
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE",
                                                                    "MASTER_ADDR", "MASTER_PORT")}
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                          cwd=str(REPO_ROOT), env=env, start_new_session=True)
            self._reader = EventReader(events)
            self._cancel_sent = None
            self._final = None
            self._state = self._blank("running")
            self._state.update(job_id=job_id, role=role, pid=self._proc.pid, events=str(events),
                               log=str(folder / "log.txt"), started=time.time())
            return job_id

    def prune(self, root: Path, newest: Path) -> list[Path]:
        """Keep the newest `tune_keep_jobs` job folders in `root` (this one's, and the Tune tab's upload copies):
        called once a job has started, when no older one runs."""
        return prune_folders(root, self.settings.tune_keep_jobs, keep_also=newest)

    def cancel(self) -> bool:
        """Ask the running job to stop (SIGTERM to its process group); False when none runs."""
        with self._lock:
            self._refresh()
            if self._proc is None or self._state["status"] != "running":
                return False
            self._signal(signal.SIGTERM)
            self._cancel_sent = time.monotonic()
            return True

    def state(self) -> dict[str, Any]:
        with self._lock:
            self._refresh()
            state = dict(self._state)
            state["losses"] = list(state["losses"])
            return state

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Block until the job ends (or `timeout_s` passes); its state."""
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        return self.state()

    def close(self, timeout_s: float = KILL_AFTER_S) -> None:
        """Cancel a running job and wait for it (server shutdown)."""
        if self.cancel():
            self.wait(timeout_s)
            with self._lock:
                if self._proc is not None and self._proc.poll() is None:
                    self._signal(signal.SIGKILL)
            self.wait(5)

    # ---- the command --------------------------------------------------------------------------------------
    def command(self, role: str, train_path: str | Path, eval_path: str | Path, *, demo: bool,
                options: dict[str, Any]) -> list[str]:
        if role not in ROLES:
            raise InputError(f"role {role!r}: choose embed or cross")
        unknown = sorted(set(options) - set(OPTION_FLAGS))
        if unknown:
            raise InputError(f"unknown tune options {unknown}; known: {', '.join(sorted(OPTION_FLAGS))}")
        if options.get("loss") not in (None, *EMBED_LOSSES):
            raise InputError(f"loss {options['loss']!r}: choose {' or '.join(EMBED_LOSSES)}")
        for path in (train_path, eval_path):
            if not Path(path).is_file():
                raise InputError(f"{path}: no such file; give the training and held-out pair files")
        cmd = [self.python, "-m", "app", "tune", "--model", role, "--train", str(train_path), "--eval",
               str(eval_path)]
        for name in SETTINGS_FLAGS:
            cmd += ["--" + name.replace("_", "-"), str(getattr(self.settings, name))]
        if demo:
            if options.get("source"):
                raise InputError("demo jobs tune the tiny demo model; leave out source")
            cmd.append("--demo")
        else:
            source = options.get("source") or (self.settings.embed_model if role == "embed"
                                               else self.settings.cross_model)
            cmd += ["--embed-model" if role == "embed" else "--cross-model", str(source)]
        for key, flag in OPTION_FLAGS.items():
            if flag and options.get(key) is not None:
                cmd += [flag, str(options[key])]
        return cmd

    # ---- following the child ------------------------------------------------------------------------------
    @staticmethod
    def _blank(status: str) -> dict[str, Any]:
        return {"job_id": None, "role": None, "status": status, "step": 0, "steps": None, "losses": [],
                "before": None, "after": None, "out": None, "report": None, "message": None, "zero_stage": None,
                "exit_code": None}

    def _signal(self, signum: int) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, signum)
        except ProcessLookupError:
            pass

    def _refresh(self) -> None:
        """Fold new events into the state; settle the status once the child has ended. Caller holds the lock."""
        if self._proc is None or self._reader is None:
            return
        for e in self._reader.new_events():
            self._apply(e)
        if self._state["status"] != "running":
            return
        code = self._proc.poll()
        if code is None:
            if self._cancel_sent is not None and time.monotonic() - self._cancel_sent > KILL_AFTER_S:
                self._signal(signal.SIGKILL)
            return
        for e in self._reader.new_events():  # written just before it exited
            self._apply(e)
        self._state["exit_code"] = code
        if self._log is not None:
            self._log.close()
            self._log = None
        final = self._final
        if final == "done" and code == 0:
            self._state["status"] = "done"
            return
        self._state["out"] = None  # the planned folder was never published
        if final == "cancelled" or self._cancel_sent is not None:
            self._state["status"] = "cancelled"
            self._state["message"] = self._state["message"] or "cancelled"
        else:
            self._state["status"] = "failed"
            if not self._state["message"]:
                self._state["message"] = f"the tune process ended with status {code}: {self._log_tail()}"

    def _apply(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        s = self._state
        if kind == "start":
            s.update(steps=e.get("steps"), zero_stage=e.get("zero_stage"), model=e.get("model"),
                     out=e.get("out"), warnings=e.get("warnings", []))
        elif kind == "eval":
            s[e.get("phase", "after")] = e.get("metrics")
        elif kind == "step":
            s["step"] = e.get("step", s["step"])
            s["steps"] = e.get("steps", s["steps"])
            s["losses"].append(e.get("loss"))
        elif kind == "done":
            s.update(out=e.get("out"), report=e.get("report"), png=e.get("png"))
        elif kind == "error":
            s["message"] = e.get("message")
        if kind in ("done", "error", "cancelled"):
            self._final = kind

    def _log_tail(self) -> str:
        path = self._state.get("log")
        try:
            lines = [ln for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except (OSError, TypeError):
            return "(no log)"
        return lines[-1][-500:] if lines else "(no output)"
