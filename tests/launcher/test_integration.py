"""The launcher as a real process supervising real child processes (tiny HTTP servers: launcher_harness's
CHILD_SCRIPT, also used by tests/gpu against NVML).

Each child serves ``/readyz`` on a free port and appends what happens to it ("start", "sigterm",
"exit") to a log file, so the tests can check what the child saw, not only what the launcher said.
Only the first incarnation misbehaves (grows, hangs), so a restart can be seen to fix things; the
crashing child crashes every time, so the restart budget runs out. The hanging child stops answering after
a number of answers, not after a time, so a slow machine cannot make it hang before it was ever ready.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from launcher_harness import (
    LauncherProcess,
    child_command,
    child_log,
    event_time,
    free_port,
    pid_alive,
    wait_until,
)

from launcher.events import EVENTS_FILE, MEMORY_FILE, STATUS_FILE

FAST = [
    "--probe", "rss",
    "--poll-s", "0.2",
    "--health-timeout-s", "5",  # a loaded machine may take a while to answer; only a hang takes 5 s
    "--startup-timeout-s", "20",
    "--backoff-initial-s", "0.1",
    "--release-timeout-s", "5",
]  # fmt: skip


def test_child_over_rss_threshold_is_restarted_with_figures(tmp_path: Path) -> None:
    port = free_port()
    args = [*FAST, "--threshold-mib", "150", "--consecutive", "2", "--grace-s", "0.5", "--drain-s", "5"]
    with LauncherProcess(
        [*args, *child_command(tmp_path, "grow", port, "--grow-mib", "300")], tmp_path
    ) as run:
        restart = run.wait_for("restart", timeout_s=20)
        assert restart["reason"] == "memory"
        assert restart["source"] == "rss"
        assert restart["threshold_mib"] == 150.0
        assert restart["used_mib"] > 150.0
        assert restart["count"] == restart["consecutive"] == 2
        first_pid = run.child_pids()[0]
        assert restart["pid"] == first_pid
        over = run.named("sample_over_threshold")
        assert [e["count"] for e in over[-2:]] == [1, 2]

        exit_event = run.wait_for("exit", timeout_s=10)
        assert exit_event["exit_code"] == 0 and exit_event["killed"] is False  # drained on SIGTERM
        run.wait_for("ready", timeout_s=20, match=lambda e: e["attempt"] == 2)
        second_pid = run.child_pids()[1]
        assert second_pid != first_pid and not pid_alive(first_pid)
        assert ["sigterm", str(first_pid)] in child_log(tmp_path)
        assert not run.named("restart")[1:], "the well-behaved second incarnation must not be restarted"

        # The event file holds the same lines as stdout; the status file shows the new child.
        lines = (run.state_dir / EVENTS_FILE).read_text().splitlines()
        assert [json.loads(line)["event"] for line in lines] == run.names()[: len(lines)]

        def sampled_second() -> bool:
            # The file is written just after the events of a loop pass: poll rather than read once.
            status = json.loads((run.state_dir / STATUS_FILE).read_text())
            sample = status["last_sample"]
            return status["state"] == "running" and sample is not None and second_pid in sample["pids"]

        assert wait_until(sampled_second, 5)
        status = json.loads((run.state_dir / STATUS_FILE).read_text())
        assert status["state"] == "running" and status["child_pid"] == second_pid
        assert status["restart_count"] == 1
        assert status["last_restart"]["reason"] == "memory"
        assert status["last_sample"]["source"] == "rss"
        assert status["last_sample"]["used_mib"] < 150.0

        # The memory file (the status tab's chart) holds both runs' samples, each with the threshold.
        samples = [json.loads(line) for line in (run.state_dir / MEMORY_FILE).read_text().splitlines()]
        assert {s["threshold_mib"] for s in samples} == {150.0} and {s["source"] for s in samples} == {"rss"}
        first_run = [s["used_mib"] for s in samples if s["pid"] == first_pid]
        assert sum(u > 150.0 for u in first_run) >= 2 and restart["used_mib"] in first_run
        assert any(s["pid"] == second_pid and s["used_mib"] < 150.0 for s in samples)


def test_crashing_child_backs_off_then_flapping_exits_3(tmp_path: Path) -> None:
    port = free_port()
    args = [
        *FAST,
        "--backoff-initial-s", "0.2",
        "--backoff-max-s", "1",
        "--max-restarts", "3",
        "--restart-window-s", "60",
    ]  # fmt: skip
    with LauncherProcess([*args, *child_command(tmp_path, "crash", port)], tmp_path) as run:
        code = run.wait_exit(timeout_s=30)
        assert code == 3, run.describe()
        crashes = run.named("crash")
        assert [e["exit_code"] for e in crashes] == [1, 1, 1, 1]
        delays = [e["delay_s"] for e in run.named("backoff")]
        assert delays == [0.2, 0.4, 0.8]
        starts = run.named("start")
        assert [e["attempt"] for e in starts] == [1, 2, 3, 4]
        # The delays really happened: each start comes at least its delay after the crash before it.
        for crash, start, delay in zip(crashes[:-1], starts[1:], delays, strict=True):
            assert event_time(start) - event_time(crash) >= delay - 0.01
        fatal = run.named("fatal")[0]
        assert fatal["level"] == "critical" and fatal["reason"] == "flapping"
        assert fatal["restarts_in_window"] == 4 and fatal["max_restarts"] == 3
        assert run.named("launcher_exit")[0]["exit_code"] == 3
        assert len([line for line in child_log(tmp_path) if line[0] == "start"]) == 4
        status = json.loads((run.state_dir / STATUS_FILE).read_text())
        assert status["state"] == "fatal" and status["exit_code"] == 3


def test_hanging_child_is_killed_after_drain_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    args = [
        *FAST,
        "--health-failures",
        "2",
        "--health-timeout-s",
        "2",
        "--drain-s",
        "0.5",
        "--grace-s",
        "0",
    ]
    with LauncherProcess(
        [*args, *child_command(tmp_path, "hang", port, "--hang-after-answers", "3")], tmp_path
    ) as run:
        run.wait_for("ready", timeout_s=20)
        restart = run.wait_for("restart", timeout_s=30)
        assert restart["reason"] == "unhealthy"
        assert restart["count"] == 2 and restart["failures"] == 2
        assert restart["detail"] == "timeout after 2 s"
        # The restart follows two failures in a row. A slow answer before the hang may have been a failure
        # too, but then an answer reset the count (health_recovered) before these two.
        names = run.names()
        failures = run.named("health_failure")
        assert [e["count"] for e in failures[-2:]] == [1, 2]
        assert names[names.index("restart") - 1] == "health_failure"
        assert names.count("health_recovered") == sum(1 for e in failures[:-2] if e["count"] == 1)
        kill = run.wait_for("kill", timeout_s=30)
        exit_event = run.wait_for("exit", timeout_s=30)
        run.wait_for("ready", timeout_s=30, match=lambda e: e["attempt"] == 2)
        assert kill["reason"] == "drain_timeout" and kill["drain_s"] == 0.5
        assert event_time(kill) - event_time(restart) >= 0.45  # SIGKILL only once the drain time is over …
        names = run.names()
        second_start = names.index("start", names.index("restart"))
        # … and before anything else: restart → kill → exit → the second start.
        assert names.index("restart") < names.index("kill") < names.index("exit") < second_start
        assert exit_event["exit_code"] == -signal.SIGKILL and exit_event["killed"] is True
        first_pid = run.child_pids()[0]
        assert ["sigterm", str(first_pid)] in child_log(tmp_path)  # it got SIGTERM first, and ignored it
        assert not pid_alive(first_pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_launcher_drains_child_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    with LauncherProcess([*FAST, "--drain-s", "5", *child_command(tmp_path, "ok", port)], tmp_path) as run:
        run.wait_for("ready", timeout_s=20)
        child_pid = run.child_pids()[0]
        run.proc.send_signal(sig)
        assert run.wait_exit(timeout_s=15) == 0, run.describe()
        assert run.named("stop_requested")[0]["reason"] == sig.name
        exit_event = run.named("exit")[0]
        assert exit_event["exit_code"] == 0 and exit_event["killed"] is False
        assert run.names()[-1] == "launcher_exit" and run.named("launcher_exit")[0]["exit_code"] == 0
        log = child_log(tmp_path)
        assert ["sigterm", str(child_pid)] in log and [
            "exit",
            str(child_pid),
        ] in log  # drained, exited itself
        assert wait_until(lambda: not pid_alive(child_pid), 5)
        assert not run.named("kill")
        status = json.loads((run.state_dir / STATUS_FILE).read_text())
        assert status["state"] == "stopped" and status["child_pid"] is None and status["exit_code"] == 0
