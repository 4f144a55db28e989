"""RestartPolicy with a fake clock (plain numbers) and scripted samples: no processes, no sleeping."""

from __future__ import annotations

import pytest

from launcher import EXIT_FLAPPING, EXIT_OK
from launcher.policy import (
    MIB,
    Action,
    Exit,
    Fatal,
    Kill,
    Note,
    PolicyConfig,
    Restart,
    RestartPolicy,
    Start,
    State,
    Stop,
    Wait,
)

THRESHOLD = 1000 * MIB
OVER = 1500 * MIB
UNDER = 500 * MIB


def make(**overrides: float) -> RestartPolicy:
    values: dict[str, float] = {
        "consecutive": 3,
        "grace_s": 10.0,
        "health_failures": 3,
        "startup_timeout_s": 100.0,
        "drain_s": 30.0,
        "release_timeout_s": 30.0,
        "backoff_initial_s": 1.0,
        "backoff_max_s": 60.0,
        "stable_s": 300.0,
        "max_restarts": 5,
        "restart_window_s": 600.0,
    }
    values.update(overrides)
    return RestartPolicy(PolicyConfig(**values))  # type: ignore[arg-type]


def kinds(actions: list[Action]) -> list[str]:
    return [a.event if isinstance(a, Note) else type(a).__name__ for a in actions]


def only(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def running(policy: RestartPolicy, now: float = 0.0) -> float:
    """Start the app at ``now`` and make it ready at ``now + 1``; returns the ready time."""
    assert only(policy.on_tick(now), Start)
    assert policy.state is State.STARTING
    assert kinds(policy.on_health(now + 1, True, "HTTP 200")) == ["ready"]
    assert policy.state is State.RUNNING
    return now + 1


def crash_and_restart(policy: RestartPolicy, now: float) -> tuple[float, list[Action]]:
    """Crash the running app at ``now``; return the backoff delay and the actions."""
    actions = policy.on_exit(now, 1)
    waits = only(actions, Wait)
    return (waits[0].delay_s if waits else -1.0), actions


# ---- start-up ------------------------------------------------------------------------------------


def test_first_tick_starts_attempt_one() -> None:
    policy = make()
    assert policy.state is State.BACKOFF
    assert policy.on_tick(0.0) == [Start(1)]
    assert policy.state is State.STARTING
    assert policy.on_tick(0.5) == []  # nothing more to do while starting


def test_readiness_failures_during_startup_do_not_count() -> None:
    policy = make(health_failures=2)
    policy.on_tick(0.0)
    for t in range(1, 10):
        assert policy.on_health(float(t), False, "connection refused") == []
    assert policy.state is State.STARTING
    note = policy.on_health(10.0, True)[0]
    assert isinstance(note, Note) and note.event == "ready"
    assert note.figures == {"attempt": 1, "startup_s": 10.0}


def test_startup_timeout_restarts_as_failed_start_with_backoff() -> None:
    policy = make(startup_timeout_s=100.0)
    policy.on_tick(0.0)
    assert policy.on_tick(99.9) == []
    actions = policy.on_tick(100.0)
    assert actions == [Restart("startup_timeout", {"startup_timeout_s": 100.0})]
    assert policy.state is State.DRAINING
    waits = only(policy.on_exit(101.0, 0), Wait)
    assert waits[0].delay_s == 1.0 and waits[0].figures["reason"] == "startup_timeout"
    assert policy.state is State.BACKOFF


# ---- memory: grace and hysteresis ----------------------------------------------------------------


def test_hysteresis_k_minus_one_samples_over_do_not_restart() -> None:
    policy = make(consecutive=3, grace_s=0.0)
    running(policy)
    a1 = policy.on_sample(2.0, OVER, THRESHOLD, "rss")
    a2 = policy.on_sample(3.0, OVER, THRESHOLD, "rss")
    assert kinds(a1) == kinds(a2) == ["sample_over_threshold"]
    assert [a.figures["count"] for a in (a1[0], a2[0])] == [1, 2]  # type: ignore[union-attr]
    assert policy.state is State.RUNNING and policy.over_count == 2


def test_hysteresis_k_samples_over_restart_with_figures() -> None:
    policy = make(consecutive=3, grace_s=0.0)
    running(policy)
    policy.on_sample(2.0, OVER, THRESHOLD, "nvml-process")
    policy.on_sample(3.0, OVER, THRESHOLD, "nvml-process")
    actions = policy.on_sample(4.0, OVER, THRESHOLD, "nvml-process")
    assert kinds(actions) == ["sample_over_threshold", "Restart"]
    restart = only(actions, Restart)[0]
    assert restart.reason == "memory"
    assert restart.figures == {
        "used_mib": 1500.0,
        "threshold_mib": 1000.0,
        "source": "nvml-process",
        "count": 3,
        "consecutive": 3,
    }
    assert policy.state is State.DRAINING


def test_hysteresis_a_sample_under_resets_the_count() -> None:
    policy = make(consecutive=3, grace_s=0.0)
    running(policy)
    policy.on_sample(2.0, OVER, THRESHOLD, "rss")
    policy.on_sample(3.0, OVER, THRESHOLD, "rss")
    reset = policy.on_sample(4.0, UNDER, THRESHOLD, "rss")
    assert kinds(reset) == ["sample_under_threshold"]
    assert reset[0].figures["previous_count"] == 2  # type: ignore[union-attr]
    assert policy.over_count == 0
    assert not only(policy.on_sample(5.0, OVER, THRESHOLD, "rss"), Restart)
    assert not only(policy.on_sample(6.0, OVER, THRESHOLD, "rss"), Restart)
    assert only(policy.on_sample(7.0, OVER, THRESHOLD, "rss"), Restart)


def test_each_source_is_counted_on_its_own_so_a_quiet_host_never_hides_a_full_gpu() -> None:
    """With the host watched beside the GPU, the samples alternate; a host sample under its threshold must not
    reset the GPU's count (nor the GPU's the host's)."""
    policy = make(consecutive=3, grace_s=0.0)
    running(policy)
    for t in (2.0, 3.0):
        assert kinds(policy.on_sample(t, OVER, THRESHOLD, "nvml-process")) == ["sample_over_threshold"]
        assert policy.on_sample(t, UNDER, THRESHOLD, "host-rss", watch="host") == []
    assert policy.over_count == 2
    restart = only(policy.on_sample(4.0, OVER, THRESHOLD, "nvml-process"), Restart)[0]
    assert (restart.reason, restart.figures["source"], restart.figures["count"]) == ("memory", "nvml-process", 3)


def test_the_host_restarts_the_app_while_the_gpu_stays_under() -> None:
    policy = make(consecutive=2, grace_s=0.0)
    running(policy)
    policy.on_sample(2.0, UNDER, THRESHOLD, "nvml-process")
    policy.on_sample(2.0, OVER, THRESHOLD, "host-rss", watch="host")
    policy.on_sample(3.0, UNDER, THRESHOLD, "nvml-device")  # NVML's fallback figure: the same watch
    restart = only(policy.on_sample(3.0, OVER, THRESHOLD, "host-rss", watch="host"), Restart)[0]
    assert (restart.figures["source"], restart.figures["count"]) == ("host-rss", 2)


def test_nvmls_fallback_figure_continues_the_probes_count() -> None:
    policy = make(consecutive=2, grace_s=0.0)
    running(policy)
    policy.on_sample(2.0, OVER, THRESHOLD, "nvml-process")
    assert only(policy.on_sample(3.0, OVER, THRESHOLD, "nvml-device"), Restart)


def test_sample_equal_to_threshold_is_not_over() -> None:
    policy = make(consecutive=1, grace_s=0.0)
    running(policy)
    assert policy.on_sample(2.0, THRESHOLD, THRESHOLD, "rss") == []
    assert policy.state is State.RUNNING


def test_grace_period_samples_never_count() -> None:
    policy = make(consecutive=2, grace_s=10.0)
    running(policy, now=0.0)
    first = policy.on_sample(2.0, OVER, THRESHOLD, "rss")
    assert kinds(first) == ["sample_over_threshold_in_grace"]
    assert first[0].figures["grace_left_s"] == 8.0  # type: ignore[union-attr]
    for t in (3.0, 5.0, 9.99):
        assert policy.on_sample(t, OVER, THRESHOLD, "rss") == []  # noted once per start, never counted
    assert policy.over_count == 0 and policy.state is State.RUNNING
    assert kinds(policy.on_sample(10.0, OVER, THRESHOLD, "rss")) == ["sample_over_threshold"]
    assert only(policy.on_sample(11.0, OVER, THRESHOLD, "rss"), Restart)


def test_grace_applies_again_after_each_restart() -> None:
    policy = make(consecutive=1, grace_s=10.0, drain_s=5.0)
    running(policy, now=0.0)
    assert only(policy.on_sample(20.0, OVER, THRESHOLD, "rss"), Restart)
    policy.on_exit(21.0, 0)
    policy.on_released(21.0)
    assert only(policy.on_tick(22.0), Start)  # backoff 1 s
    assert not only(policy.on_sample(31.9, OVER, THRESHOLD, "rss"), Restart)  # 9.9 s after the new start
    assert only(policy.on_sample(32.0, OVER, THRESHOLD, "rss"), Restart)


def test_memory_counts_during_a_slow_startup_after_grace() -> None:
    policy = make(consecutive=2, grace_s=5.0)
    policy.on_tick(0.0)
    policy.on_sample(6.0, OVER, THRESHOLD, "rss")
    assert only(policy.on_sample(7.0, OVER, THRESHOLD, "rss"), Restart)


# ---- health --------------------------------------------------------------------------------------


def test_health_failures_k_in_a_row_restart_as_unhealthy() -> None:
    policy = make(health_failures=3)
    running(policy)
    assert kinds(policy.on_health(2.0, False, "timeout after 5 s")) == ["health_failure"]
    assert kinds(policy.on_health(3.0, False, "HTTP 503")) == ["health_failure"]
    assert policy.health_fail_count == 2
    actions = policy.on_health(4.0, False, "timeout after 5 s")
    assert actions[-1] == Restart("unhealthy", {"count": 3, "failures": 3, "detail": "timeout after 5 s"})
    assert policy.state is State.DRAINING


def test_health_success_resets_failure_count() -> None:
    policy = make(health_failures=3)
    running(policy)
    policy.on_health(2.0, False, "HTTP 503")
    policy.on_health(3.0, False, "HTTP 503")
    assert kinds(policy.on_health(4.0, True)) == ["health_recovered"]
    assert policy.health_fail_count == 0
    policy.on_health(5.0, False, "HTTP 503")
    assert not only(policy.on_health(6.0, False, "HTTP 503"), Restart)
    assert only(policy.on_health(7.0, False, "HTTP 503"), Restart)


# ---- drain / kill timeline -----------------------------------------------------------------------


def test_drain_timeline_sigterm_at_t_sigkill_at_t_plus_drain() -> None:
    policy = make(consecutive=1, grace_s=0.0, drain_s=30.0)
    running(policy)
    t = 50.0
    assert only(policy.on_sample(t, OVER, THRESHOLD, "rss"), Restart)  # SIGTERM at t
    assert policy.on_tick(t + 29.99) == []
    assert policy.on_tick(t + 30.0) == [Kill("drain_timeout", {"drain_s": 30.0})]  # SIGKILL at t + drain
    assert policy.on_tick(t + 31.0) == []  # killed once
    exit_note = policy.on_exit(t + 30.1, -9)[0]
    assert exit_note == Note("exit", "info", {"exit_code": -9, "killed": True})


def test_drain_no_kill_when_app_exits_in_time() -> None:
    policy = make(consecutive=1, grace_s=0.0, drain_s=30.0)
    running(policy)
    policy.on_sample(50.0, OVER, THRESHOLD, "rss")
    actions = policy.on_exit(60.0, 0)
    assert actions[0] == Note("exit", "info", {"exit_code": 0, "killed": False})
    assert policy.state is State.BACKOFF
    assert policy.on_tick(80.0) == []  # past the old kill deadline: no SIGKILL, old memory not yet freed
    policy.on_released(80.0)
    assert policy.on_tick(80.0) == [Start(2)]


def test_restart_waits_for_memory_release_up_to_timeout() -> None:
    policy = make(consecutive=1, grace_s=0.0, release_timeout_s=30.0, backoff_initial_s=1.0)
    running(policy)
    policy.on_sample(10.0, OVER, THRESHOLD, "nvml-process")
    policy.on_exit(12.0, 0)
    assert policy.on_tick(13.0) == []  # backoff over, memory not released yet
    assert kinds(policy.on_released(20.0)) == ["memory_released"]
    assert policy.on_tick(20.0) == [Start(2)]
    # …and when the release never shows, start anyway at the release deadline.
    policy2 = make(release_timeout_s=30.0)
    running(policy2)
    policy2.on_exit(10.0, 1)
    assert policy2.on_tick(39.9) == []
    assert kinds(policy2.on_tick(40.0)) == ["release_timeout", "Start"]


# ---- backoff -------------------------------------------------------------------------------------


def test_backoff_grows_1_2_4_until_the_cap() -> None:
    policy = make(backoff_initial_s=1.0, backoff_max_s=8.0, max_restarts=100, restart_window_s=10_000.0)
    delays = []
    now = 0.0
    for _ in range(6):
        policy.on_tick(now)  # start
        delay, _ = crash_and_restart(policy, now + 0.5)
        delays.append(delay)
        policy.on_released(now + 0.5)
        now += 0.5 + delay
        assert policy.on_tick(now - 0.01) == []  # not before the delay is over
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_resets_after_a_stable_run() -> None:
    policy = make(backoff_initial_s=1.0, backoff_max_s=60.0, stable_s=300.0, max_restarts=100)
    ready = running(policy, 0.0)
    assert crash_and_restart(policy, ready + 10)[0] == 1.0
    policy.on_released(ready + 10)
    policy.on_tick(ready + 11)
    policy.on_health(ready + 12, True)
    assert crash_and_restart(policy, ready + 20)[0] == 2.0
    policy.on_released(ready + 20)
    policy.on_tick(ready + 22)
    policy.on_health(ready + 23, True)  # ready at ready + 23
    delay, actions = crash_and_restart(policy, ready + 23 + 300)  # ran stable_s since ready
    assert delay == 1.0
    assert only(actions, Wait)[0].figures["backoff_reset"] is True


def test_backoff_does_not_reset_when_never_ready_for_stable_s() -> None:
    policy = make(stable_s=300.0, startup_timeout_s=1000.0)
    policy.on_tick(0.0)
    assert crash_and_restart(policy, 400.0)[0] == 1.0  # up 400 s but never ready
    policy.on_released(400.0)
    policy.on_tick(401.0)
    assert crash_and_restart(policy, 900.0)[0] == 2.0


# ---- restart budget ------------------------------------------------------------------------------


def test_flapping_m_plus_one_restarts_within_window_is_fatal() -> None:
    policy = make(max_restarts=5, restart_window_s=600.0, backoff_initial_s=1.0, backoff_max_s=4.0)
    now = 0.0
    for restart in range(1, 6):
        policy.on_tick(now)
        _, actions = crash_and_restart(policy, now + 1)
        assert only(actions, Wait), f"restart {restart} should be allowed"
        assert policy.restarts_in_window(now + 1) == restart
        policy.on_released(now + 1)
        now += 10
    policy.on_tick(now)
    actions = policy.on_exit(now + 1, 1)  # the 6th restart within 600 s
    assert kinds(actions) == ["crash", "Fatal", "Exit"]
    fatal = only(actions, Fatal)[0]
    assert fatal.reason == "flapping"
    assert fatal.figures == {
        "trigger": "crash",
        "restarts_in_window": 6,
        "max_restarts": 5,
        "restart_window_s": 600.0,
    }
    assert actions[-1] == Exit(EXIT_FLAPPING) and EXIT_FLAPPING == 3
    assert policy.state is State.FATAL
    assert policy.on_tick(now + 100) == []  # fatal is final


def test_restarts_outside_the_window_do_not_count() -> None:
    policy = make(max_restarts=2, restart_window_s=100.0, backoff_max_s=1.0)
    now = 0.0
    for _ in range(10):  # one restart every 60 s: never more than 2 within 100 s
        policy.on_tick(now)
        _, actions = crash_and_restart(policy, now + 1)
        assert only(actions, Wait)
        policy.on_released(now + 1)
        now += 60
    assert policy.restart_count == 10


def test_memory_restarts_count_toward_the_budget() -> None:
    policy = make(max_restarts=1, consecutive=1, grace_s=0.0)
    running(policy, 0.0)
    policy.on_sample(5.0, OVER, THRESHOLD, "rss")
    assert only(policy.on_exit(6.0, 0), Wait)
    policy.on_released(6.0)
    policy.on_tick(7.0)
    policy.on_health(8.0, True)
    policy.on_sample(9.0, OVER, THRESHOLD, "rss")
    assert only(policy.on_exit(10.0, 0), Fatal)[0].figures["trigger"] == "memory"


# ---- stop requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("ready", [False, True])
def test_stop_drains_then_exits_zero(ready: bool) -> None:
    policy = make(drain_s=30.0)
    policy.on_tick(0.0)
    if ready:
        policy.on_health(1.0, True)
    assert kinds(policy.on_stop(5.0, "SIGTERM")) == ["stop_requested", "Stop"]
    assert policy.state is State.DRAINING
    assert policy.on_tick(34.9) == []
    assert policy.on_tick(35.0) == [Kill("drain_timeout", {"drain_s": 30.0})]
    assert kinds(policy.on_exit(35.1, -9)) == ["exit", "Exit"]
    assert policy.on_exit(35.1, -9) == []  # already stopped
    assert policy.state is State.STOPPED


def test_stop_during_a_restart_drain_stops_instead_of_restarting() -> None:
    policy = make(consecutive=1, grace_s=0.0)
    running(policy)
    policy.on_sample(5.0, OVER, THRESHOLD, "rss")
    assert kinds(policy.on_stop(6.0, "SIGINT")) == ["stop_requested"]
    assert policy.on_exit(7.0, 0)[-1] == Exit(EXIT_OK)


def test_second_stop_request_kills_at_once() -> None:
    policy = make()
    running(policy)
    policy.on_stop(5.0, "SIGINT")
    assert policy.on_stop(5.5, "SIGINT")[-1] == Kill("second_stop_request")


def test_stop_during_backoff_exits_without_starting() -> None:
    policy = make()
    running(policy)
    policy.on_exit(5.0, 1)
    assert policy.on_stop(5.5, "SIGTERM")[-1] == Exit(EXIT_OK)
    assert policy.on_tick(100.0) == []
    assert policy.state is State.STOPPED


def test_crash_note_carries_exit_code_and_state() -> None:
    policy = make()
    running(policy, 0.0)
    note = policy.on_exit(42.0, -11)[0]
    assert note == Note("crash", "warning", {"exit_code": -11, "state": "running", "uptime_s": 42.0})


# ---- the event lines' exact content (level and figures), which the status file and the journal show -------


def test_sample_notes_carry_their_level_and_rounded_figures() -> None:
    policy = make()  # grace 10 s, 3 consecutive
    assert only(policy.on_tick(0.0), Start)
    used, threshold = 1234.5678 * MIB, 1000.04 * MIB  # rounded to 0.1 MiB: 1234.6 and 1000.0
    assert policy.on_sample(1.23456, used, threshold, "nvml") == [Note(
        "sample_over_threshold_in_grace", "info",
        {"used_mib": 1234.6, "threshold_mib": 1000.0, "source": "nvml", "grace_left_s": 8.765})]
    assert kinds(policy.on_health(2.0, True)) == ["ready"]
    assert policy.on_sample(11.0, used, threshold, "rss") == [Note(
        "sample_over_threshold", "warning",
        {"used_mib": 1234.6, "threshold_mib": 1000.0, "source": "rss", "count": 1, "consecutive": 3})]
    assert policy.on_sample(12.0, UNDER, threshold, "rss") == [Note(
        "sample_under_threshold", "info",
        {"used_mib": 500.0, "threshold_mib": 1000.0, "source": "rss", "previous_count": 1})]


def test_released_and_stop_notes_carry_their_level_and_figures() -> None:
    policy = make()
    ready = running(policy)
    delay, _ = crash_and_restart(policy, ready + 5.0)
    assert policy.on_released(ready + 7.12345) == [Note("memory_released", "info", {"waited_s": 2.123})]
    assert policy.released and policy.on_released(ready + 8.0) == []  # noted once
    assert policy.on_stop(ready + 9.0, "SIGTERM") == [Note("stop_requested", "info", {"reason": "SIGTERM"}),
                                                      Exit(EXIT_OK)]


def test_memory_released_is_noted_only_in_backoff() -> None:
    policy = make()
    ready = running(policy)
    assert policy.on_released(ready + 1.0) == []  # running: nothing was released
    assert policy.state is State.RUNNING


def test_a_restart_leaves_the_window_exactly_restart_window_s_later() -> None:
    policy = make(restart_window_s=600.0)
    ready = running(policy)
    crash_and_restart(policy, ready + 5.0)
    assert policy.restarts_in_window(ready + 5.0 + 599.5) == 1
    assert policy.restarts_in_window(ready + 5.0 + 600.0) == 0  # the window is (now − 600 s, now]


def test_stop_names_its_reason_and_a_second_stop_kills_once() -> None:
    policy = make()
    ready = running(policy)
    note = Note("stop_requested", "info", {"reason": "SIGINT"})
    assert policy.on_stop(ready + 1.0, "SIGINT") == [note, Stop("SIGINT")]
    assert policy.on_stop(ready + 2.0, "SIGINT") == [note, Kill("second_stop_request")]
    assert policy.on_stop(ready + 3.0, "SIGINT") == [note]  # already killed: nothing more to do
    assert policy.on_exit(ready + 4.0, -9) == [Note("exit", "info", {"exit_code": -9, "killed": True}),
                                               Exit(EXIT_OK)]
