"""The supervisor loop with a fake clock, fake child processes, a scripted probe and scripted readiness.

Checks the wiring the policy tests cannot: actions really reach the child at the right (fake) time,
the release wait gates the next spawn, fallbacks and errors are logged, and the status file follows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from launcher.config import load_config
from launcher.events import MEMORY_FILE, STATUS_FILE, EventLog, MemoryLog, StatusFile
from launcher.health import HealthResult
from launcher.probes import MemorySample, ProbeError
from launcher.supervisor import Supervisor

MIB = 2**20


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.hooks: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def at(self, t: float, hook: Callable[[], None]) -> None:
        self.hooks.append((t, hook))

    def sleep(self, dt: float) -> None:
        self.now = round(self.now + dt, 6)
        for t, hook in list(self.hooks):
            if self.now >= t:
                self.hooks.remove((t, hook))
                hook()
        if self.now > 10_000:
            raise AssertionError("the supervisor never finished")


class FakeChild:
    """Exits ``exit_after_term_s`` after SIGTERM (never, when None), at once on SIGKILL."""

    def __init__(
        self, clock: FakeClock, pid: int, exit_after_term_s: float | None, crash_at: float | None
    ) -> None:
        self.clock = clock
        self.pid = pid
        self.exit_after_term_s = exit_after_term_s
        self.exit_at = crash_at
        self.exit_code = 1
        self.signals: list[tuple[str, float]] = []

    def poll(self) -> int | None:
        if self.exit_at is not None and self.clock.now >= self.exit_at:
            return self.exit_code
        return None

    def terminate(self) -> bool:
        self.signals.append(("TERM", self.clock.now))
        if self.exit_after_term_s is not None and self.exit_at is None:
            self.exit_at, self.exit_code = self.clock.now + self.exit_after_term_s, 0
        return True

    def kill(self) -> bool:
        self.signals.append(("KILL", self.clock.now))
        if self.exit_at is None or self.exit_at > self.clock.now:
            self.exit_at, self.exit_code = self.clock.now, -9
        return True


class FakeProbe:
    name = "fake"

    def __init__(
        self, samples: Callable[[float], MemorySample | Exception], holds: Callable[[float], bool]
    ) -> None:
        self.samples = samples
        self.holds = holds
        self.clock: FakeClock | None = None
        self.closed = False

    def describe(self) -> dict[str, object]:
        return {"probe": "fake", "source": "fake"}

    def total_bytes(self) -> int:
        return 1000 * MIB

    def sample(self, root_pid: int) -> MemorySample:
        assert self.clock is not None
        result = self.samples(self.clock.now)
        if isinstance(result, Exception):
            raise result
        return result

    def holds_memory(self, procs: Sequence[Any]) -> bool:
        assert self.clock is not None
        return self.holds(self.clock.now)

    def close(self) -> None:
        self.closed = True


def rss(used_mib: float, source: str = "rss", note: str = "") -> MemorySample:
    return MemorySample(int(used_mib * MIB), 1000 * MIB, source, (1,), note)


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        argv: list[str],
        probe: FakeProbe,
        exit_after_term_s: float | None = 1.0,
        crash_at: Callable[[int], float | None] = lambda attempt: None,
        ready: Callable[[float], bool] = lambda now: True,
        spawn_error: OSError | None = None,
        memory_lines: int = 1000,
        host_probe: FakeProbe | None = None,
    ) -> None:
        self.clock = FakeClock()
        probe.clock = self.clock
        if host_probe is not None:
            host_probe.clock = self.clock
        self.stream = io.StringIO()
        self.children: list[FakeChild] = []
        self.spawn_times: list[float] = []
        config = load_config(["--state-dir", str(tmp_path), *argv, "--", "app"], {"HOME": str(tmp_path)})

        def spawn(argv: Sequence[str]) -> FakeChild:
            self.spawn_times.append(self.clock.now)
            if spawn_error is not None:
                raise spawn_error
            attempt = len(self.spawn_times)
            child = FakeChild(self.clock, 1000 + attempt, exit_after_term_s, crash_at(attempt))
            self.children.append(child)
            return child

        self.supervisor = Supervisor(
            config,
            probe,  # type: ignore[arg-type]
            EventLog(tmp_path, stream=self.stream, wall_clock=lambda: 1_700_000_000 + self.clock.now),
            StatusFile(tmp_path),
            probe_reason="test",
            host_probe=host_probe,  # type: ignore[arg-type]
            memory_log=MemoryLog(tmp_path, max_lines=memory_lines),
            spawn=spawn,  # type: ignore[arg-type]
            readiness=lambda: HealthResult(ready(self.clock.now), "scripted"),
            tree=lambda pid: [SimpleNamespace(pid=pid)],  # type: ignore[list-item]
            clock=self.clock,
            wall_clock=lambda: 1_700_000_000 + self.clock.now,
            sleep=self.clock.sleep,
        )

    def run(self) -> int:
        return self.supervisor.run()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [r for r in records if name is None or r["event"] == name]

    def stop_at(self, t: float) -> None:
        self.clock.at(t, lambda: self.supervisor.request_stop("SIGTERM"))


FAST = ["--poll-s", "1", "--grace-s", "5", "--consecutive", "2", "--threshold-mib", "500", "--drain-s", "10"]


def test_memory_restart_waits_for_release_before_spawning(tmp_path: Path) -> None:
    probe = FakeProbe(
        samples=lambda now: rss(800 if now < 20 else 100),
        holds=lambda now: now < 30,  # the old process's memory is freed at t=30
    )
    h = Harness(tmp_path, [*FAST, "--release-timeout-s", "60"], probe, exit_after_term_s=2.0)
    h.stop_at(40.0)
    assert h.run() == 0
    first = h.children[0]
    # Grace ends at t=5; samples at t=5 and t=6 are over → SIGTERM at t=6.
    assert first.signals == [("TERM", 6.0), ("KILL", 8.0)]  # KILL = the group clean-up after the exit
    restart = h.events("restart")[0]
    assert (restart["reason"], restart["used_mib"], restart["threshold_mib"]) == ("memory", 800.0, 500.0)
    assert h.events("exit")[0]["exit_code"] == 0
    assert h.spawn_times[0] == 0.0
    assert 30.0 <= h.spawn_times[1] < 30.5  # backoff ended at t=9, but the memory was held until t=30
    assert h.events("memory_released")[0]["waited_s"] >= 22.0
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["state"] == "stopped" and status["restart_count"] == 1


def test_every_sample_goes_to_the_memory_file_with_threshold_and_pid(tmp_path: Path) -> None:
    probe = FakeProbe(samples=lambda now: rss(800 if now < 7 else 100), holds=lambda now: False)
    h = Harness(tmp_path, FAST, probe, exit_after_term_s=2.0)
    h.stop_at(30.0)
    assert h.run() == 0
    lines = [json.loads(line) for line in (tmp_path / MEMORY_FILE).read_text().splitlines()]
    first, second = h.children[0].pid, h.children[1].pid
    by_pid = {pid: [r for r in lines if r["pid"] == pid] for pid in (first, second)}
    assert len(by_pid[first]) + len(by_pid[second]) == len(lines)
    # One line per sample the policy judged: t=1..6 for the first app (SIGTERM at 6), each second for the next.
    assert [r["ts"] for r in by_pid[first]] == [f"2023-11-14T22:13:{21 + t:02d}.000Z" for t in range(6)]
    assert {r["used_mib"] for r in by_pid[first]} == {800.0}
    assert {r["used_mib"] for r in by_pid[second]} == {100.0}
    assert {(r["threshold_mib"], r["total_mib"], r["source"]) for r in lines} == {(500.0, 1000.0, "rss")}
    # The restart the chart marks is the one in the event log, between the two runs' samples.
    restart_ts = h.events("restart")[0]["ts"]
    assert by_pid[first][-1]["ts"] <= restart_ts < by_pid[second][0]["ts"]


def test_memory_file_stays_bounded_over_a_long_run(tmp_path: Path) -> None:
    probe = FakeProbe(samples=lambda now: rss(100), holds=lambda now: False)
    h = Harness(tmp_path, FAST, probe, memory_lines=40)
    h.stop_at(200.0)
    assert h.run() == 0
    lines = (tmp_path / MEMORY_FILE).read_text().splitlines()
    assert 30 <= len(lines) <= 40
    assert json.loads(lines[-1])["ts"] == "2023-11-14T22:16:39.000Z"  # the last sample, t=199


def test_app_ignoring_sigterm_is_killed_at_the_drain_deadline(tmp_path: Path) -> None:
    probe = FakeProbe(samples=lambda now: rss(800), holds=lambda now: False)
    h = Harness(tmp_path, FAST, probe, exit_after_term_s=None)
    h.stop_at(30.0)
    assert h.run() == 0
    assert h.children[0].signals[:2] == [("TERM", 6.0), ("KILL", 16.0)]
    kill = h.events("kill")[0]
    assert kill["reason"] == "drain_timeout" and kill["drain_s"] == 10.0


def test_device_fallback_is_logged_once_and_shown_in_status(tmp_path: Path) -> None:
    note = "no NVML process matches the app's PIDs"
    probe = FakeProbe(samples=lambda now: rss(100, "nvml-device", note), holds=lambda now: False)
    h = Harness(tmp_path, FAST, probe)
    h.stop_at(10.0)
    assert h.run() == 0
    sources = h.events("memory_source")
    assert len(sources) == 1
    assert (
        sources[0]["source"] == "nvml-device"
        and sources[0]["level"] == "warning"
        and sources[0]["note"] == note
    )
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["last_sample"]["source"] == "nvml-device" and status["last_sample"]["note"] == note


def test_probe_errors_are_logged_once_and_never_restart(tmp_path: Path) -> None:
    probe = FakeProbe(samples=lambda now: ProbeError("NVML: GPU is lost"), holds=lambda now: False)
    h = Harness(tmp_path, FAST, probe)
    h.stop_at(20.0)
    assert h.run() == 0
    assert [e["error"] for e in h.events("probe_error")] == ["NVML: GPU is lost"]
    assert not h.events("restart")


def test_spawn_failure_backs_off_then_flaps_out(tmp_path: Path) -> None:
    probe = FakeProbe(samples=lambda now: rss(1), holds=lambda now: False)
    argv = [*FAST, "--max-restarts", "2", "--backoff-initial-s", "1"]
    h = Harness(tmp_path, argv, probe, spawn_error=FileNotFoundError(2, "No such file", "app"))
    assert h.run() == 3
    assert len(h.events("spawn_failed")) == 3
    assert [e["exit_code"] for e in h.events("crash")] == [127, 127, 127]
    assert [e["delay_s"] for e in h.events("backoff")] == [1.0, 2.0]
    assert [e["event"] for e in h.events()[-2:]] == ["fatal", "launcher_exit"]
    assert h.events()[-1]["exit_code"] == 3
    assert probe.closed


def test_crash_kills_leftover_group_and_reports_exit_code(tmp_path: Path) -> None:
    probe = FakeProbe(samples=lambda now: rss(1), holds=lambda now: False)
    h = Harness(tmp_path, FAST, probe, crash_at=lambda attempt: 3.0 if attempt == 1 else None)
    h.stop_at(12.0)
    assert h.run() == 0
    assert h.children[0].signals[0][0] == "KILL"  # leftover workers in its group are SIGKILLed
    crash = h.events("crash")[0]
    assert crash["exit_code"] == 1 and crash["pid"] == 1001 and crash["state"] == "running"
    assert h.events("start")[1]["attempt"] == 2 and h.events("start")[1]["pid"] == 1002


def test_beside_a_gpu_probe_the_hosts_memory_restarts_the_app_on_its_own_threshold(tmp_path: Path) -> None:
    gpu = FakeProbe(samples=lambda now: rss(100, "nvml-process"), holds=lambda now: False)
    host = FakeProbe(samples=lambda now: rss(900 if now < 10 else 100), holds=lambda now: False)  # of 1,000 MiB
    h = Harness(tmp_path, [*FAST, "--host-threshold-ratio", "0.8"], gpu, exit_after_term_s=2.0, host_probe=host)
    h.stop_at(20.0)
    assert h.run() == 0
    assert h.events("probe_selected")[0]["host_threshold_mib"] == 800.0
    restart = h.events("restart")[0]
    assert (restart["reason"], restart["source"], restart["used_mib"], restart["threshold_mib"]) == (
        "memory", "host-rss", 900.0, 800.0)
    assert h.children[0].signals[0] == ("TERM", 6.0)  # grace to t=5, then two host samples over
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["last_host_sample"]["threshold_mib"] == 800.0 and status["last_sample"]["source"] == "nvml-process"
