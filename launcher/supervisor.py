"""The launcher's loop: observe (child exit, memory probe, readiness) → ask the policy → act.

The supervisor owns the I/O the policy must not do: it spawns and signals the app (``child``), samples
memory (``probes``), probes ``/readyz`` (``health``), and writes every decision as an event and the
current view as the status file (``events``). Clock, sleep, spawn and readiness are injected so tests
can drive the loop without real time or processes.

This module must not import ``app``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import psutil

from launcher.config import LauncherConfig
from launcher.events import EventLog, MemoryLog, StatusFile, utc_timestamp
from launcher.health import HealthResult, ReadinessProbe
from launcher.policy import (
    MIB,
    Action,
    Exit,
    Fatal,
    Kill,
    Note,
    Restart,
    RestartPolicy,
    Start,
    State,
    Stop,
    Wait,
    mib,
)
from launcher.probes import MemoryProbe, MemorySample, ProbeError, process_tree

# Start-up readiness is probed at least this often: a refused connection costs nothing, and a late
# "ready" only delays the moment health failures start to count.
STARTUP_PROBE_INTERVAL_S = 1.0
# The loop wakes this often at most to notice exits, deadlines and stop requests between polls.
MAX_TICK_S = 0.25
# Option names whose values never go into an event (the app's own flags may carry credentials).
SECRET_WORDS = ("auth", "pass", "secret", "token", "key", "credential")


class AppProcess(Protocol):
    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> bool: ...

    def kill(self) -> bool: ...


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command for an event line, with the values of secret-looking options replaced."""
    redacted: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            redacted.append("***")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        secret = arg.startswith("-") and any(word in name.lower() for word in SECRET_WORDS)
        if secret and eq:
            redacted.append(f"{name}=***")
        else:
            redacted.append(arg)
            hide_next = secret
    return redacted


class Supervisor:
    def __init__(
        self,
        config: LauncherConfig,
        probe: MemoryProbe,
        events: EventLog,
        status: StatusFile,
        *,
        probe_reason: str = "",
        host_probe: MemoryProbe | None = None,
        memory_log: MemoryLog | None = None,
        spawn: Callable[[Sequence[str]], AppProcess] | None = None,
        readiness: Callable[[], HealthResult] | None = None,
        tree: Callable[[int], list[psutil.Process]] = process_tree,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.policy = RestartPolicy(config.policy())
        self._probe = probe
        self._probe_reason = probe_reason
        # Beside a GPU probe, the host's memory (launcher.probes.host_probe), judged against its own threshold.
        self._host_probe = host_probe
        self.host_threshold_bytes = (config.host_threshold_ratio * host_probe.total_bytes()
                                     if host_probe is not None else None)
        self._last_host_sample: dict[str, object] | None = None
        self._events = events
        self._status = status
        self._memory_log = memory_log
        if spawn is None:
            from launcher.child import ChildProcess

            spawn = ChildProcess.spawn
        self._spawn = spawn
        self._readiness = readiness or ReadinessProbe(
            config.health_host, config.port, config.health_timeout_s, config.probe_auth
        )
        self._tree = tree
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._tick_s = min(MAX_TICK_S, config.poll_s / 2)
        if config.threshold_mib is not None:
            self.threshold_bytes = config.threshold_mib * MIB
        else:
            self.threshold_bytes = config.threshold_ratio * probe.total_bytes()

        self._child: AppProcess | None = None
        self._child_pid: int | None = None
        self._snapshot: list[psutil.Process] = []  # the app's tree as last seen, for the release wait
        self._old_procs: list[psutil.Process] = []
        self._stop_requests: list[str] = []
        self._next_sample_at = 0.0
        self._next_health_at = 0.0
        self._last_sample: dict[str, object] | None = None
        self._last_source = ""
        self._last_probe_error = ""
        self._last_health: dict[str, object] | None = None
        self._last_restart: dict[str, object] | None = None
        self._last_exit_code: int | None = None
        self._exit_code: int | None = None
        self._dirty = True

    # ---- public ----------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Called from the SIGTERM/SIGINT handler: only records the request (signal-safe)."""
        self._stop_requests.append(reason)

    def run(self) -> int:
        """Supervise until stopped (0) or flapping (3)."""
        self._announce()
        try:
            while True:
                code = self.step()
                if code is not None:
                    return code
                self._sleep(self._tick_s)
        finally:
            # Never leave the app running without its watchdog, whatever ended the loop.
            if self._child is not None and self._child.poll() is None:
                self._child.kill()
            self._probe.close()

    def step(self) -> int | None:
        """One pass of the loop; the launcher's exit status once it is done, else None."""
        policy = self.policy
        while self._stop_requests:
            code = self._execute(policy.on_stop(self._clock(), self._stop_requests.pop(0)))
            if code is not None:
                return code

        if self._child is not None:
            exit_code = self._child.poll()
            if exit_code is not None:
                code = self._on_child_exit(exit_code)
                if code is not None:
                    return code

        if self._child is not None and policy.state in (State.STARTING, State.RUNNING):
            code = self._maybe_sample()
            if code is None and policy.state in (State.STARTING, State.RUNNING):
                code = self._maybe_probe_health()
            if code is not None:
                return code

        awaiting_release = policy.state is State.BACKOFF and not policy.released
        if awaiting_release and not self._probe.holds_memory(self._old_procs):
            self._execute(policy.on_released(self._clock()))

        code = self._execute(policy.on_tick(self._clock()))
        if code is not None:
            return code
        if self._dirty:
            self._write_status()
        return None

    # ---- observations ----------------------------------------------------------------------------

    def _on_child_exit(self, exit_code: int) -> int | None:
        assert self._child is not None
        # Workers the app forked may outlive it in its process group; they would keep memory and ports.
        self._child.kill()
        self._old_procs = list(self._snapshot)
        self._child = None
        self._last_exit_code = exit_code
        self._dirty = True
        return self._execute(self.policy.on_exit(self._clock(), exit_code))

    def _maybe_sample(self) -> int | None:
        now = self._clock()
        if now < self._next_sample_at or self._child_pid is None:
            return None
        self._next_sample_at = now + self.config.poll_s
        self._refresh_snapshot()
        try:
            sample = self._probe.sample(self._child_pid)
        except ProbeError as exc:
            if str(exc) != self._last_probe_error:
                self._last_probe_error = str(exc)
                self._emit("probe_error", "warning", error=str(exc))
            return None
        self._last_probe_error = ""
        self._record_sample(sample)
        code = self._execute(
            self.policy.on_sample(self._clock(), sample.used_bytes, self.threshold_bytes, sample.source)
        )
        if code is not None or self._host_probe is None or self.host_threshold_bytes is None:
            return code
        host = self._host_probe.sample(self._child_pid)  # psutil: cannot fail the way NVML can
        self._last_host_sample = {"used_mib": mib(host.used_bytes), "total_mib": mib(host.total_bytes),
                                  "threshold_mib": mib(self.host_threshold_bytes), "source": host.source}
        return self._execute(
            self.policy.on_sample(self._clock(), host.used_bytes, self.host_threshold_bytes, "host-" + host.source,
                                  watch="host")
        )

    def _record_sample(self, sample: MemorySample) -> None:
        self._last_sample = {
            "ts": utc_timestamp(self._wall()),
            "used_mib": mib(sample.used_bytes),
            "total_mib": mib(sample.total_bytes),
            "threshold_mib": mib(self.threshold_bytes),
            "source": sample.source,
            "note": sample.note,
            "pids": list(sample.pids),
        }
        self._dirty = True
        if self._memory_log is not None:
            # The app's status tab draws these, the threshold as a line; the PID tells one run from the next.
            self._memory_log.append(
                {
                    "ts": self._last_sample["ts"],
                    "pid": self._child_pid,
                    "used_mib": mib(sample.used_bytes),
                    "threshold_mib": mib(self.threshold_bytes),
                    "total_mib": mib(sample.total_bytes),
                    "source": sample.source,
                }
            )
        if sample.source != self._last_source:
            # Say which figure the thresholds are compared with, and why when it is a fallback.
            level = "warning" if sample.source == "nvml-device" else "info"
            self._emit(
                "memory_source",
                level,
                source=sample.source,
                previous=self._last_source or None,
                note=sample.note,
            )
            self._last_source = sample.source

    def _maybe_probe_health(self) -> int | None:
        now = self._clock()
        if now < self._next_health_at:
            return None
        starting = self.policy.state is State.STARTING
        interval = min(self.config.poll_s, STARTUP_PROBE_INTERVAL_S) if starting else self.config.poll_s
        self._next_health_at = now + interval
        result = self._readiness()
        self._last_health = {"ts": utc_timestamp(self._wall()), "ok": result.ok, "detail": result.detail}
        self._dirty = True
        return self._execute(self.policy.on_health(self._clock(), result.ok, result.detail))

    def _refresh_snapshot(self) -> None:
        if self._child_pid is not None:
            tree = self._tree(self._child_pid)
            if tree:
                self._snapshot = tree

    # ---- actions ---------------------------------------------------------------------------------

    def _execute(self, actions: Sequence[Action]) -> int | None:
        for action in actions:
            self._dirty = True
            match action:
                case Note(event=event, level=level, figures=figures):
                    self._emit(event, level, pid=self._child_pid, **figures)
                case Start():
                    code = self._start(action)
                    if code is not None:
                        return code
                case Restart(reason=reason, figures=figures):
                    self._last_restart = {"ts": utc_timestamp(self._wall()), "reason": reason}
                    self._emit(
                        "restart",
                        "warning",
                        reason=reason,
                        pid=self._child_pid,
                        drain_s=self.config.drain_s,
                        **figures,
                    )
                    self._terminate()
                case Stop(reason=reason):
                    self._emit(
                        "stop", "info", reason=reason, pid=self._child_pid, drain_s=self.config.drain_s
                    )
                    self._terminate()
                case Kill(reason=reason, figures=figures):
                    self._emit("kill", "warning", reason=reason, pid=self._child_pid, **figures)
                    if self._child is not None:
                        self._child.kill()
                case Wait(delay_s=delay_s, figures=figures):
                    restart_at = utc_timestamp(self._wall() + delay_s)
                    self._emit("backoff", "warning", delay_s=delay_s, restart_at=restart_at, **figures)
                case Fatal(reason=reason, figures=figures):
                    detail = (
                        f"{figures.get('restarts_in_window')} restarts within "
                        f"{figures.get('restart_window_s')} s exceed --max-restarts "
                        f"{figures.get('max_restarts')}; not restarting again"
                    )
                    self._emit("fatal", "critical", reason=reason, detail=detail, **figures)
                case Exit(code=code):
                    self._exit_code = code
                    self._emit("launcher_exit", "critical" if code else "info", exit_code=code)
                    self._write_status()
                    return code
        return None

    def _start(self, action: Start) -> int | None:
        self._next_sample_at = self._clock() + self.config.poll_s
        self._next_health_at = self._clock()
        try:
            child = self._spawn(self.config.command)
        except OSError as exc:
            # Treated like a crash at once: backoff, and the restart budget ends a hopeless loop.
            self._emit("spawn_failed", "error", attempt=action.attempt, error=f"{type(exc).__name__}: {exc}")
            return self._execute(self.policy.on_exit(self._clock(), 127))
        self._child = child
        self._child_pid = child.pid
        self._last_sample = None
        self._snapshot = self._tree(child.pid)
        self._emit(
            "start",
            "info",
            attempt=action.attempt,
            pid=child.pid,
            command=redact_argv(self.config.command),
            port=self.config.port,
        )
        return None

    def _terminate(self) -> None:
        if self._child is None:
            return
        self._refresh_snapshot()
        self._child.terminate()

    # ---- output ----------------------------------------------------------------------------------

    def _announce(self) -> None:
        self._emit(
            "launcher_started",
            "info",
            launcher_pid=os.getpid(),
            command=redact_argv(self.config.command),
            port=self.config.port,
            readyz=f"http://{self.config.health_host}:{self.config.port}/readyz",
            state_dir=str(self.config.state_dir),
            options=self.config.summary(),
        )
        self._emit(
            "probe_selected",
            "info",
            reason=self._probe_reason,
            threshold_mib=mib(self.threshold_bytes),
            threshold_from="threshold_mib" if self.config.threshold_mib is not None else "threshold_ratio",
            host_threshold_mib=mib(self.host_threshold_bytes) if self.host_threshold_bytes is not None else None,
            **self._probe.describe(),
        )
        self._write_status()

    def _emit(self, event: str, level: str, **fields: object) -> None:
        self._events.emit(event, level, **fields)

    def _write_status(self) -> None:
        policy = self.policy
        self._status.write(
            {
                "ts": utc_timestamp(self._wall()),
                "launcher_pid": os.getpid(),
                "state": policy.state.value,
                "child_pid": self._child_pid if self._child is not None else None,
                "port": self.config.port,
                "attempt": policy.attempt,
                "restart_count": policy.restart_count,
                "restarts_in_window": policy.restarts_in_window(self._clock()),
                "probe": self._probe.name,
                "threshold_mib": mib(self.threshold_bytes),
                "consecutive_over": policy.over_count,
                "health_failures": policy.health_fail_count,
                "last_sample": self._last_sample,
                "last_host_sample": self._last_host_sample,
                "last_health": self._last_health,
                "last_restart": self._last_restart,
                "last_exit_code": self._last_exit_code,
                "exit_code": self._exit_code,
            }
        )
        self._dirty = False
