"""The launcher passes the app nothing the app reads from its own environment: the drain is the app's
WENMO_DRAIN_S, which the app reads and the launcher reads too (for its patience before SIGKILL). Only a drain
given to the launcher itself (`--drain-s`, WENMO_LAUNCHER_DRAIN_S), which the app cannot see, becomes the app's
`--drain-s`. It used to add `--drain-s 30` always, so WENMO_DRAIN_S was ignored under the launcher."""

from __future__ import annotations

import dataclasses
import re
import time
import urllib.request
from pathlib import Path

import pytest
from launcher_harness import REPO_ROOT, LauncherProcess, clean_env, free_port

from launcher.config import ConfigError, LauncherConfig, load_config

PY = "/usr/bin/python-for-tests"
HOME = {"HOME": "/home/wenmo"}


def test_wenmo_drain_s_is_read_by_both_and_passed_by_neither() -> None:
    config = load_config(["--port", "7861"], {**HOME, "WENMO_DRAIN_S": "12.5"}, python=PY)
    assert config.command == (PY, "-m", "app", "serve", "--port", "7861")
    assert config.drain_s == 12.5  # SIGKILL only after the app's own drain


def test_the_launchers_own_drain_is_passed_to_the_app() -> None:
    flag = load_config(["--drain-s", "7"], {**HOME, "WENMO_DRAIN_S": "12"}, python=PY)
    assert flag.command == (PY, "-m", "app", "serve", "--drain-s", "7") and flag.drain_s == 7  # a flag wins
    env = load_config([], {**HOME, "WENMO_LAUNCHER_DRAIN_S": "9"}, python=PY)
    assert env.command == (PY, "-m", "app", "serve", "--drain-s", "9") and env.drain_s == 9
    same = load_config([], {**HOME, "WENMO_LAUNCHER_DRAIN_S": "9", "WENMO_DRAIN_S": "9.0"}, python=PY)
    assert same.drain_s == 9


def test_two_drain_variables_that_disagree_stop_the_start() -> None:
    with pytest.raises(ConfigError) as info:
        load_config([], {**HOME, "WENMO_LAUNCHER_DRAIN_S": "9", "WENMO_DRAIN_S": "60"})
    assert str(info.value).startswith("WENMO_LAUNCHER_DRAIN_S=9 and WENMO_DRAIN_S=60 disagree")
    assert "set only WENMO_DRAIN_S" in str(info.value)


def test_wenmo_drain_s_is_checked_as_the_app_checks_it() -> None:
    from app.config import Settings
    from app.errors import ConfigError as AppConfigError

    assert load_config([], {**HOME, "WENMO_DRAIN_S": ""}).drain_s == 30  # empty is unset, for the app too
    for text in ("-1", "nan", "inf", "soon", "0", "2.5"):
        try:
            app_value: float | None = Settings.from_env({"WENMO_DRAIN_S": text}).drain_s
        except AppConfigError:
            app_value = None
        try:
            launcher_value: float | None = load_config([], {**HOME, "WENMO_DRAIN_S": text}).drain_s
        except ConfigError as exc:
            assert f"invalid WENMO_DRAIN_S={text!r}" in str(exc)
            launcher_value = None
        assert launcher_value == app_value, text


def test_the_default_drains_agree() -> None:
    from app.config import Settings

    app_default = next(f.default for f in dataclasses.fields(Settings) if f.name == "drain_s")
    assert LauncherConfig.drain_s == app_default == 30


def _get(url: str) -> int:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not (REPO_ROOT / "app" / "__main__.py").exists(), reason="app not built yet")
def test_the_real_app_under_the_launcher_drains_for_wenmo_drain_s(tmp_path: Path) -> None:
    """`python -m launcher` running the real `python -m app serve --demo`, with only WENMO_DRAIN_S set: the app's
    start command has no --drain-s, and on SIGTERM both the app (its log line) and the launcher (its stop event)
    use WENMO_DRAIN_S's figure."""
    port = free_port()
    env = clean_env({"WENMO_DRAIN_S": "7", "WENMO_AUTH": "user:pass", "WENMO_STATE_DIR": str(tmp_path / "app")})
    with LauncherProcess(["--probe", "rss", "--poll-s", "0.5", "--port", str(port), "--demo"], tmp_path, env) as run:
        start = run.wait_for("start", 30)
        assert "--drain-s" not in start["command"] and start["command"][-4:] == ["serve", "--port", str(port),
                                                                                 "--demo"], start
        deadline = time.monotonic() + 120
        while _get(f"http://127.0.0.1:{port}/healthz") != 200:  # listening: its signal handlers are in place
            assert time.monotonic() < deadline and run.proc.poll() is None, run.describe()
            time.sleep(0.2)
        run.proc.terminate()
        assert run.wait_exit(60) == 0, run.describe()
        assert run.named("stop")[0]["drain_s"] == 7.0
        assert run.named("exit")[0]["exit_code"] == 0 and not run.named("kill"), run.describe()
    app_log = (tmp_path / "launcher-stderr.log").read_text(errors="replace")
    drains = re.findall(r"event=signal signal=SIGTERM action=drain drain_s=(\S+)", app_log)
    assert drains == ["7"], app_log[-3000:]
