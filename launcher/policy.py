"""Restart policy: a pure, deterministic state machine for the launcher.

It is fed what the supervisor observed (memory samples, readiness results, the child's exit, stop
requests, the passing of time) and answers with actions for the supervisor to carry out (``Start``,
``Restart``, ``Stop``, ``Kill``, ``Wait``, ``Fatal``, ``Exit``) and ``Note`` records that only need
logging. The clock is passed in as ``now`` (monotonic seconds) on every call, so tests drive it with plain
numbers.

No I/O here: no processes, no sockets, no files, no clock, no logging — and no import of ``app``.

States (``State``) and transitions, each also named in a comment where it happens::

    (initial)         → BACKOFF   nothing to wait for: the first tick starts the app
    BACKOFF           → STARTING  backoff delay over and the old tree's memory released (or timed out)
    STARTING          → RUNNING   /readyz answered 200
    STARTING          → DRAINING  start-up timeout, or K samples over the threshold after the grace period
    RUNNING           → DRAINING  K samples over the threshold, or K readiness failures in a row
    STARTING, RUNNING → DRAINING  stop requested (SIGTERM/SIGINT to the launcher)
    DRAINING          → DRAINING  drain deadline passed (SIGKILL), or a second stop request
    STARTING, RUNNING → BACKOFF   the app exited on its own (crash)
    DRAINING          → BACKOFF   the app exited after the SIGTERM/SIGKILL we sent (restart)
    DRAINING          → STOPPED   the app exited and a stop was requested
    BACKOFF           → STOPPED   stop requested while nothing runs
    (any exit)        → FATAL     instead of BACKOFF: the restart would exceed the budget (flapping)

The initial state is BACKOFF with nothing to wait for, so the first start and every restart go through
the same gate.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from launcher import EXIT_FLAPPING, EXIT_OK

MIB = 1024 * 1024

Figures = Mapping[str, object]


class State(enum.StrEnum):
    STARTING = "starting"  # spawned, /readyz not yet 200
    RUNNING = "running"  # ready; memory and health are watched
    DRAINING = "draining"  # SIGTERM sent (SIGKILL after the drain deadline); waiting for the exit
    BACKOFF = "backoff"  # nothing running; waiting out the delay and the old memory's release
    FATAL = "fatal"  # restart budget spent; the launcher exits with EXIT_FLAPPING
    STOPPED = "stopped"  # stopped on request; the launcher exits with EXIT_OK


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's knobs; field names match the launcher options (``--grace-s`` → ``grace_s``)."""

    consecutive: int = 3
    grace_s: float = 60.0
    health_failures: int = 3
    startup_timeout_s: float = 600.0
    drain_s: float = 30.0
    release_timeout_s: float = 30.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_s: float = 300.0
    max_restarts: int = 5
    restart_window_s: float = 600.0


# ---- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Spawn the app (``attempt`` 1 is the first start, later ones are restarts)."""

    attempt: int


@dataclass(frozen=True)
class Restart:
    """SIGTERM the app's process group to drain it, then start it again."""

    reason: str
    figures: Figures = field(default_factory=dict)


@dataclass(frozen=True)
class Stop:
    """SIGTERM the app's process group to drain it, then exit without restarting."""

    reason: str


@dataclass(frozen=True)
class Kill:
    """SIGKILL the app's process group."""

    reason: str
    figures: Figures = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Back off: start again no earlier than ``until`` (and once the old memory is released)."""

    until: float
    delay_s: float
    figures: Figures = field(default_factory=dict)


@dataclass(frozen=True)
class Fatal:
    """Give up restarting; the next action is ``Exit(EXIT_FLAPPING)``."""

    reason: str
    figures: Figures = field(default_factory=dict)


@dataclass(frozen=True)
class Exit:
    """The launcher's work is over: exit with ``code``."""

    code: int


@dataclass(frozen=True)
class Note:
    """A decision worth one event line that needs no action (sample counted, crash seen, …)."""

    event: str
    level: str = "info"
    figures: Figures = field(default_factory=dict)


Action = Start | Restart | Stop | Kill | Wait | Fatal | Exit | Note


def mib(n_bytes: float) -> float:
    """Bytes → MiB rounded for event lines (figures people read, not compute with)."""
    return round(n_bytes / MIB, 1)


class RestartPolicy:
    """The launcher's decisions, as a function of what was observed and when."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        # (initial) → BACKOFF: nothing to wait for, so the first on_tick starts the app.
        self._state = State.BACKOFF
        self._attempt = 0
        self._started_at = 0.0
        self._ready_at: float | None = None
        self._over_counts: dict[str, int] = {}  # per watch: the probe's memory and, beside it, the host's
        self._grace_noted = False
        self._health_fail_count = 0
        self._drain_reason = ""
        self._kill_at = math.inf
        self._killed = False
        self._stopping = False
        self._next_delay_s = config.backoff_initial_s
        self._backoff_until = -math.inf
        self._release_deadline = -math.inf
        self._released = True
        self._exited_at = 0.0
        self._restart_times: deque[float] = deque()
        self.restart_count = 0

    # ---- read-only views for the supervisor and the status file ----------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def released(self) -> bool:
        return self._released

    @property
    def over_count(self) -> int:
        """Samples in a row over the threshold, of the source with the most."""
        return max(self._over_counts.values(), default=0)

    @property
    def health_fail_count(self) -> int:
        return self._health_fail_count

    def restarts_in_window(self, now: float) -> int:
        return sum(1 for t in self._restart_times if t > now - self.config.restart_window_s)

    # ---- inputs ----------------------------------------------------------------------------------

    def on_tick(self, now: float) -> list[Action]:
        """Time passed: start after backoff, time out a start-up, kill after the drain deadline."""
        cfg = self.config
        if self._state is State.BACKOFF:
            if now < self._backoff_until:
                return []
            actions: list[Action] = []
            if not self._released:
                if now < self._release_deadline:
                    return []  # the new process would OOM on memory the old one is still freeing
                actions.append(Note("release_timeout", "warning", {"waited_s": cfg.release_timeout_s}))
                self._released = True
            # BACKOFF → STARTING: delay over and the old process's memory is gone (or we stopped waiting).
            self._state = State.STARTING
            self._attempt += 1
            self._started_at = now
            self._ready_at = None
            self._over_counts = {}
            self._grace_noted = False
            self._health_fail_count = 0
            actions.append(Start(self._attempt))
            return actions
        if self._state is State.STARTING and now - self._started_at >= cfg.startup_timeout_s:
            # STARTING → DRAINING: never became ready in time; this counts as a failed start.
            return [self._drain(now, "startup_timeout", {"startup_timeout_s": cfg.startup_timeout_s})]
        if self._state is State.DRAINING and not self._killed and now >= self._kill_at:
            # DRAINING → DRAINING (killed): the drain deadline passed and the app is still alive.
            self._killed = True
            return [Kill("drain_timeout", {"drain_s": cfg.drain_s})]
        return []

    def on_sample(self, now: float, used_bytes: float, threshold_bytes: float, source: str,
                  watch: str = "probe") -> list[Action]:
        """One memory sample of the app's process tree; K consecutive samples over → restart. Each `watch` (the
        probe's memory — the GPU's, whichever NVML figure it falls back to — and the host's beside it, "host") is
        counted on its own: a sample under its threshold resets only its own count."""
        if self._state not in (State.STARTING, State.RUNNING):
            return []
        cfg = self.config
        figures: dict[str, object] = {
            "used_mib": mib(used_bytes),
            "threshold_mib": mib(threshold_bytes),
            "source": source,
        }
        over = used_bytes > threshold_bytes
        grace_end = self._started_at + cfg.grace_s
        if now < grace_end:
            # Model loading spikes: samples in the grace period neither count nor restart.
            self._over_counts.pop(watch, None)
            if over and not self._grace_noted:
                self._grace_noted = True
                figures["grace_left_s"] = round(grace_end - now, 3)
                return [Note("sample_over_threshold_in_grace", "info", figures)]
            return []
        count = self._over_counts.get(watch, 0)
        if not over:
            if count == 0:
                return []
            # Hysteresis: one sample under the threshold resets the count.
            figures["previous_count"] = count
            del self._over_counts[watch]
            return [Note("sample_under_threshold", "info", figures)]
        count = self._over_counts[watch] = count + 1
        figures.update(count=count, consecutive=cfg.consecutive)
        note = Note("sample_over_threshold", "warning", figures)
        if count < cfg.consecutive:
            return [note]
        # STARTING/RUNNING → DRAINING: K consecutive samples over the threshold.
        return [note, self._drain(now, "memory", figures)]

    def on_health(self, now: float, ok: bool, detail: str = "") -> list[Action]:
        """One readiness probe result (``GET /readyz`` answered 200, or not)."""
        if self._state is State.STARTING:
            if not ok:
                return []  # start-up is governed by startup_timeout_s, not by failure counting
            # STARTING → RUNNING: /readyz answered 200.
            self._state = State.RUNNING
            self._ready_at = now
            return [
                Note(
                    "ready", "info", {"attempt": self._attempt, "startup_s": round(now - self._started_at, 3)}
                )
            ]
        if self._state is not State.RUNNING:
            return []
        if ok:
            if self._health_fail_count == 0:
                return []
            previous, self._health_fail_count = self._health_fail_count, 0
            return [Note("health_recovered", "info", {"previous_failures": previous})]
        self._health_fail_count += 1
        figures = {
            "count": self._health_fail_count,
            "failures": self.config.health_failures,
            "detail": detail,
        }
        note = Note("health_failure", "warning", figures)
        if self._health_fail_count < self.config.health_failures:
            return [note]
        # RUNNING → DRAINING: K consecutive readiness failures = a hang.
        return [note, self._drain(now, "unhealthy", figures)]

    def on_exit(self, now: float, exit_code: int) -> list[Action]:
        """The app process exited (negative code = killed by that signal number)."""
        if self._state is State.DRAINING:
            expected = Note("exit", "info", {"exit_code": exit_code, "killed": self._killed})
            if self._stopping:
                # DRAINING → STOPPED: drained (or killed) on the launcher's own stop request.
                self._state = State.STOPPED
                return [expected, Exit(EXIT_OK)]
            # DRAINING → BACKOFF (or FATAL): the restart we asked for.
            return [expected, *self._schedule_restart(now, self._drain_reason)]
        if self._state in (State.STARTING, State.RUNNING):
            crashed_in = self._state.value
            uptime_s = round(now - self._started_at, 3)
            note = Note(
                "crash", "warning", {"exit_code": exit_code, "state": crashed_in, "uptime_s": uptime_s}
            )
            # STARTING/RUNNING → BACKOFF (or FATAL): the app exited on its own.
            return [note, *self._schedule_restart(now, "crash")]
        return []

    def on_released(self, now: float) -> list[Action]:
        """The old process tree no longer holds memory (GPU per NVML, or the processes are gone)."""
        if self._state is not State.BACKOFF or self._released:
            return []
        self._released = True
        return [Note("memory_released", "info", {"waited_s": round(now - self._exited_at, 3)})]

    def on_stop(self, now: float, reason: str) -> list[Action]:
        """SIGTERM/SIGINT to the launcher: drain and stop the app, then exit 0."""
        note = Note("stop_requested", "info", {"reason": reason})
        if self._state in (State.STARTING, State.RUNNING):
            # STARTING/RUNNING → DRAINING (stopping): same SIGTERM → drain → SIGKILL path as a restart.
            self._stopping = True
            self._begin_drain(now, "stop")
            return [note, Stop(reason)]
        if self._state is State.DRAINING:
            if self._stopping and not self._killed:
                # DRAINING → DRAINING (killed): a second stop request means "now".
                self._killed = True
                return [note, Kill("second_stop_request")]
            # DRAINING → DRAINING (stopping): finish the drain already under way, then stop.
            self._stopping = True
            return [note]
        if self._state is State.BACKOFF:
            # BACKOFF → STOPPED: nothing is running.
            self._state = State.STOPPED
            return [note, Exit(EXIT_OK)]
        return []

    # ---- transitions shared by several inputs ----------------------------------------------------

    def _drain(self, now: float, reason: str, figures: Figures) -> Restart:
        self._begin_drain(now, reason)
        return Restart(reason, dict(figures))

    def _begin_drain(self, now: float, reason: str) -> None:
        self._state = State.DRAINING
        self._drain_reason = reason
        self._kill_at = now + self.config.drain_s
        self._killed = False

    def _schedule_restart(self, now: float, reason: str) -> list[Action]:
        cfg = self.config
        self._exited_at = now
        reset = False
        if self._ready_at is not None and now - self._ready_at >= cfg.stable_s:
            # A long healthy run means the last failure is not part of a streak: start backoff over.
            self._next_delay_s = cfg.backoff_initial_s
            reset = True
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] <= now - cfg.restart_window_s:
            self._restart_times.popleft()
        in_window = len(self._restart_times)
        if in_window > cfg.max_restarts:
            # → FATAL: more than max_restarts within the window is flapping; let systemd decide.
            self._state = State.FATAL
            figures = {
                "trigger": reason,
                "restarts_in_window": in_window,
                "max_restarts": cfg.max_restarts,
                "restart_window_s": cfg.restart_window_s,
            }
            return [Fatal("flapping", figures), Exit(EXIT_FLAPPING)]
        self.restart_count += 1
        delay = self._next_delay_s
        self._next_delay_s = min(delay * 2, cfg.backoff_max_s)
        # → BACKOFF: wait the delay and, in parallel, for the old tree's memory to be released.
        self._state = State.BACKOFF
        self._backoff_until = now + delay
        self._release_deadline = now + cfg.release_timeout_s
        self._released = False
        figures = {"reason": reason, "restarts_in_window": in_window, "backoff_reset": reset}
        return [Wait(now + delay, delay, figures)]
