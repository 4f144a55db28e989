"""RestartPolicy: the exact event lines (level and figures) that the journal and the status file show, the
public views the supervisor reads, and clock arithmetic that tests starting at t = 0 cannot tell apart
(now − start vs now + start). Each test kills mutants that tests/mutation.sh found surviving."""

from __future__ import annotations

from launcher.policy import Note, PolicyConfig, RestartPolicy, Start, State, Wait


def make(**overrides: float) -> RestartPolicy:
    values: dict[str, float] = {
        "consecutive": 3, "grace_s": 10.0, "health_failures": 3, "startup_timeout_s": 100.0, "drain_s": 30.0,
        "release_timeout_s": 30.0, "backoff_initial_s": 1.0, "backoff_max_s": 60.0, "stable_s": 300.0,
        "max_restarts": 5, "restart_window_s": 600.0,
    }
    values.update(overrides)
    return RestartPolicy(PolicyConfig(**values))  # type: ignore[arg-type]


# The launcher's clock is monotonic seconds since boot: never 0 in practice. Starting late tells now − start
# from now + start.
T0 = 1000.0


def test_a_new_policy_shows_no_over_samples_and_no_health_failures_in_the_status_file() -> None:
    policy = make()
    assert (policy.over_count, policy.health_fail_count, policy.released) == (0, 0, True)


def test_ready_note_carries_the_start_up_time_rounded_to_milliseconds() -> None:
    policy = make()
    assert policy.on_tick(T0) == [Start(1)]
    assert policy.on_health(T0 + 1.23456, True, "HTTP 200") == [
        Note("ready", "info", {"attempt": 1, "startup_s": 1.235})]


def test_crash_note_carries_the_uptime_rounded_to_milliseconds() -> None:
    policy = make()
    policy.on_tick(T0)
    policy.on_health(T0 + 1.0, True, "HTTP 200")
    assert policy.on_exit(T0 + 42.34567, 1)[0] == Note(
        "crash", "warning", {"exit_code": 1, "state": "running", "uptime_s": 42.346})


def test_startup_timeout_counts_from_the_start_not_from_zero() -> None:
    policy = make(startup_timeout_s=100.0)
    policy.on_tick(T0)
    assert policy.on_tick(T0 + 99.0) == []
    assert policy.state is State.STARTING
    assert [type(a).__name__ for a in policy.on_tick(T0 + 100.0)] == ["Restart"]


def test_health_failure_and_recovery_notes() -> None:
    policy = make(health_failures=3)
    policy.on_tick(T0)
    policy.on_health(T0 + 1.0, True, "HTTP 200")
    assert policy.on_health(T0 + 2.0, True, "HTTP 200") == []  # healthy and nothing to recover from
    assert policy.on_health(T0 + 3.0, False, "HTTP 503") == [
        Note("health_failure", "warning", {"count": 1, "failures": 3, "detail": "HTTP 503"})]
    assert policy.health_fail_count == 1
    # one success after a single failure is a recovery, and resets the count
    assert policy.on_health(T0 + 4.0, True, "HTTP 200") == [
        Note("health_recovered", "info", {"previous_failures": 1})]
    assert policy.health_fail_count == 0
    # a failure reported without detail shows an empty detail, not a placeholder
    assert policy.on_health(T0 + 5.0, False) == [
        Note("health_failure", "warning", {"count": 1, "failures": 3, "detail": ""})]


def test_wait_carries_its_deadline_and_figures_after_a_crash() -> None:
    policy = make(backoff_initial_s=2.0)
    policy.on_tick(T0)
    policy.on_health(T0 + 1.0, True, "HTTP 200")
    actions = policy.on_exit(T0 + 5.0, 1)  # 4 s after ready: far from stable_s, no reset
    assert actions[1:] == [Wait(T0 + 7.0, 2.0, {"reason": "crash", "restarts_in_window": 1, "backoff_reset": False})]
    assert policy.released is False  # the supervisor now waits for the old tree's memory


def test_a_stable_run_resets_the_backoff_and_says_so() -> None:
    policy = make(stable_s=300.0)
    policy.on_tick(T0)
    policy.on_health(T0 + 1.0, True, "HTTP 200")
    wait = policy.on_exit(T0 + 301.0, 1)[-1]
    assert wait == Wait(T0 + 302.0, 1.0, {"reason": "crash", "restarts_in_window": 1, "backoff_reset": True})


def test_release_timeout_note_and_released_afterwards() -> None:
    policy = make(release_timeout_s=30.0, backoff_initial_s=1.0)
    policy.on_tick(T0)
    policy.on_health(T0 + 1.0, True, "HTTP 200")
    policy.on_exit(T0 + 5.0, 1)
    assert policy.on_tick(T0 + 34.9) == []  # delay over, memory not yet released, deadline not reached
    assert policy.on_tick(T0 + 35.0) == [Note("release_timeout", "warning", {"waited_s": 30.0}), Start(2)]
    assert policy.released is True


def test_a_restart_exactly_restart_window_s_old_no_longer_counts_toward_the_budget() -> None:
    policy = make(max_restarts=1, restart_window_s=600.0, backoff_initial_s=1.0, release_timeout_s=0.0)
    policy.on_tick(T0)
    policy.on_exit(T0 + 10.0, 1)  # restart 1 at T0 + 10
    assert only_starts(policy.on_tick(T0 + 20.0)) == [Start(2)]
    # the second crash comes exactly 600 s after the first: the window is (now − 600 s, now], so one restart
    actions = policy.on_exit(T0 + 610.0, 1)
    assert isinstance(actions[-1], Wait) and actions[-1].figures["restarts_in_window"] == 1
    assert policy.state is State.BACKOFF


def only_starts(actions: list) -> list:
    return [a for a in actions if isinstance(a, Start)]
