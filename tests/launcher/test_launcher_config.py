"""Launcher configuration: flags, WENMO_LAUNCHER_* variables, pass-through app options, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from launcher_harness import REPO_ROOT, clean_env

from launcher import EXIT_USAGE
from launcher.__main__ import main
from launcher.config import OPTIONS, ConfigError, LauncherConfig, load_config
from launcher.supervisor import redact_argv

PY = "/usr/bin/python-for-tests"
HOME = {"HOME": "/home/wenmo"}


def test_unrecognised_options_pass_through_to_app_serve() -> None:
    config = load_config(["--threshold-ratio", "0.8", "--port", "7861", "--demo"], HOME, python=PY)
    assert config.command == (PY, "-m", "app", "serve", "--port", "7861", "--demo")
    assert config.port == 7861
    assert config.threshold_ratio == 0.8 and config.threshold_mib is None


def test_defaults() -> None:
    config = load_config([], HOME, python=PY)
    assert config.command == (PY, "-m", "app", "serve")  # nothing added: the app reads its own environment
    assert config.port == 7860
    assert config.health_host == "127.0.0.1"
    assert config.state_dir == Path("/home/wenmo/.local/state/wenmo")
    assert (config.probe, config.gpu_index, config.threshold_ratio, config.consecutive) == ("auto", 0, 0.9, 3)
    assert (config.grace_s, config.poll_s, config.health_failures, config.health_timeout_s) == (60, 5, 3, 5)
    assert (config.startup_timeout_s, config.drain_s, config.backoff_initial_s, config.backoff_max_s) == (
        600,
        30,
        1,
        60,
    )
    assert (config.stable_s, config.max_restarts, config.restart_window_s, config.events_max_lines) == (
        300,
        5,
        600,
        1000,
    )


def test_every_option_is_an_environment_variable_and_flags_win() -> None:
    env = {
        **HOME,
        "WENMO_LAUNCHER_THRESHOLD_MIB": "20000",
        "WENMO_LAUNCHER_POLL_S": "2.5",
        "WENMO_LAUNCHER_CONSECUTIVE": "4",
        "WENMO_LAUNCHER_PROBE": "rss",
        "WENMO_LAUNCHER_STATE_DIR": "/srv/wenmo-state",
    }
    config = load_config(["--poll-s", "1"], env, python=PY)
    assert config.threshold_mib == 20000.0
    assert config.poll_s == 1.0  # the flag beats the variable
    assert config.consecutive == 4 and config.probe == "rss"
    assert config.state_dir == Path("/srv/wenmo-state")
    names = {o.env for o in OPTIONS}
    assert {"WENMO_LAUNCHER_GRACE_S", "WENMO_LAUNCHER_DRAIN_S", "WENMO_LAUNCHER_MAX_RESTARTS"} <= names
    assert {o.name for o in OPTIONS} == set(LauncherConfig.__dataclass_fields__) - {
        "command",
        "port",
        "probe_auth",
    }


def test_state_dir_falls_back_to_wenmo_state_dir() -> None:
    assert load_config([], {**HOME, "WENMO_STATE_DIR": "/var/lib/wenmo"}).state_dir == Path("/var/lib/wenmo")


def test_port_from_command_then_wenmo_port_then_default() -> None:
    explicit = load_config(["--poll-s", "1", "--", "python", "child.py", "--port=9001"], HOME)
    assert explicit.command == ("python", "child.py", "--port=9001") and explicit.port == 9001
    assert load_config(["--", "python", "x.py"], {**HOME, "WENMO_PORT": "7999"}).port == 7999
    assert load_config(["--", "python", "x.py"], HOME).port == 7860
    assert load_config(["--port", "1", "--port", "8080"], HOME).port == 8080  # last wins, like argparse


def test_the_hosts_threshold_defaults_to_four_fifths_and_zero_turns_it_off() -> None:
    assert load_config([], HOME).host_threshold_ratio == 0.8
    assert load_config([], {**HOME, "WENMO_LAUNCHER_HOST_THRESHOLD_RATIO": "0"}).host_threshold_ratio == 0.0


def test_health_auth_comes_from_wenmo_auth_and_never_shows() -> None:
    config = load_config([], {**HOME, "WENMO_AUTH": "user:s3cret"})
    assert config.probe_auth == "user:s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.summary())


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--poll-s", "abc"], {}, "invalid --poll-s='abc': expected a number"),
        (["--poll-s", "0"], {}, "invalid --poll-s='0': expected seconds > 0"),
        (
            [],
            {"WENMO_LAUNCHER_THRESHOLD_RATIO": "1.5"},
            "WENMO_LAUNCHER_THRESHOLD_RATIO='1.5': expected a fraction",
        ),
        (["--host-threshold-ratio", "1.5"], {}, "expected a fraction in [0, 1], e.g. 0.8 (0: off)"),
        ([], {"WENMO_LAUNCHER_PROBE": "gpu"}, "expected one of auto, nvml, rss"),
        ([], {"WENMO_LAUNCHER_CONSECUTIVE": "0"}, "expected a whole number >= 1"),
        ([], {"WENMO_LAUNCHER_GRACE_S": "nan"}, "expected a finite number"),
        (["--threshold-mib", "100", "--threshold-ratio", "0.5"], {}, "not both"),
        (["--backoff-initial-s", "10", "--backoff-max-s", "5"], {}, "below --backoff-initial-s"),
        (["--port", "99999"], {}, "invalid --port='99999': expected a TCP port"),
        ([], {"WENMO_PORT": "x"}, "invalid WENMO_PORT='x'"),
        (["--demo", "--", "python", "x.py"], {}, "unrecognised launcher option(s) --demo"),
        (["--"], {}, "nothing after `--`"),
    ],
)
def test_invalid_values_raise_with_a_clear_message(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, {**HOME, **env})
    assert message in str(info.value)


def test_main_exits_2_with_the_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["--state-dir", str(tmp_path)], {**HOME, "WENMO_LAUNCHER_MAX_RESTARTS": "-1"})
    assert code == EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert err.startswith("launcher: invalid WENMO_LAUNCHER_MAX_RESTARTS='-1': expected a whole number >= 0")


def test_real_process_exits_2_on_bad_value_and_on_argparse_errors(tmp_path: Path) -> None:
    env = clean_env({"WENMO_LAUNCHER_DRAIN_S": "-3"})
    cmd = [sys.executable, "-m", "launcher", "--state-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "invalid WENMO_LAUNCHER_DRAIN_S='-3': expected seconds >= 0" in done.stderr
    assert done.stdout == ""  # nothing started, no events
    done = subprocess.run([*cmd, "--poll-s"], cwd=REPO_ROOT, env=clean_env(), capture_output=True, timeout=30)
    assert done.returncode == 2


def test_redact_argv_hides_secret_looking_option_values() -> None:
    argv = ["python", "-m", "app", "serve", "--auth", "u:p", "--api-key=abc", "--port", "7860", "--token"]
    assert redact_argv(argv) == [
        "python",
        "-m",
        "app",
        "serve",
        "--auth",
        "***",
        "--api-key=***",
        "--port",
        "7860",
        "--token",
    ]
