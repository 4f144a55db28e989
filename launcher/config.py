"""Launcher configuration: argv + environment → one frozen ``LauncherConfig``.

The only module of the launcher that reads the environment. Every option is a flag ``--name-with-dashes``
and an environment variable ``WENMO_LAUNCHER_NAME_WITH_UNDERSCORES``; the flag wins over the variable,
the variable over the default. Invalid values raise ``ConfigError`` naming the source, the value and
what is allowed; ``__main__`` turns that into exit status 2.

Options the launcher does not recognise are the app's: ``python -m launcher --poll-s 2 --port 7861
--demo`` runs ``python -m app serve --port 7861 --demo``. With an explicit command after ``--`` the
launcher runs that instead, and stray options before ``--`` are an error.

The launcher adds to the app's command line nothing the app reads from its own environment (the whole
environment is passed to it unchanged). The drain is the app's setting ``WENMO_DRAIN_S``: without a
launcher ``--drain-s`` or ``WENMO_LAUNCHER_DRAIN_S`` the launcher reads that variable too, for its patience
before SIGKILL, and the app reads it itself; ``--drain-s D`` is added only when one of the launcher's own
two gave the figure, which the app cannot see.

This module must not import ``app``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from launcher.policy import PolicyConfig
from launcher.probes import PROBE_KINDS

ENV_PREFIX = "WENMO_LAUNCHER_"
DEFAULT_PORT = 7860


class ConfigError(ValueError):
    """An invalid option or environment value; the message says what is allowed."""


@dataclass(frozen=True)
class LauncherConfig:
    command: tuple[str, ...]
    port: int
    state_dir: Path
    health_host: str = "127.0.0.1"
    probe: str = "auto"
    gpu_index: int = 0
    threshold_mib: float | None = None
    threshold_ratio: float = 0.90
    host_threshold_ratio: float = 0.80
    consecutive: int = 3
    grace_s: float = 60.0
    poll_s: float = 5.0
    health_failures: int = 3
    health_timeout_s: float = 5.0
    startup_timeout_s: float = 600.0
    drain_s: float = 30.0
    release_timeout_s: float = 30.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_s: float = 300.0
    max_restarts: int = 5
    restart_window_s: float = 600.0
    events_max_lines: int = 1000
    pid_file: Path | None = None
    log_file: Path | None = None
    # Basic-auth credentials for /readyz, from the app's own WENMO_AUTH; never logged (repr=False).
    probe_auth: str | None = field(default=None, repr=False)

    def policy(self) -> PolicyConfig:
        return PolicyConfig(
            consecutive=self.consecutive,
            grace_s=self.grace_s,
            health_failures=self.health_failures,
            startup_timeout_s=self.startup_timeout_s,
            drain_s=self.drain_s,
            release_timeout_s=self.release_timeout_s,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            stable_s=self.stable_s,
            max_restarts=self.max_restarts,
            restart_window_s=self.restart_window_s,
        )

    def summary(self) -> dict[str, object]:
        """The options for the ``launcher_started`` event (no command, no credentials)."""
        return {o.name: _jsonable(getattr(self, o.name)) for o in OPTIONS}


# ---- value parsers: each returns the value or raises ValueError("expected …") ----------------------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def seconds(minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text)
        if value < minimum or (not inclusive and value == minimum):
            raise ValueError(f"expected seconds {'>=' if inclusive else '>'} {minimum:g}")
        return value

    return parse


def whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return value

    return parse


def _ratio(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise ValueError("expected a fraction in (0, 1], e.g. 0.9")
    return value


def _ratio_or_off(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise ValueError("expected a fraction in [0, 1], e.g. 0.8 (0: off)")
    return value


def _mebibytes(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise ValueError("expected MiB > 0")
    return value


def _probe_kind(text: str) -> str:
    if text not in PROBE_KINDS:
        raise ValueError(f"expected one of {', '.join(PROBE_KINDS)}")
    return text


def _host(text: str) -> str:
    if not text or any(c.isspace() or c in "/?#@" for c in text):
        raise ValueError("expected a host name or IP address, e.g. 127.0.0.1")
    return text


def _directory(text: str) -> Path:
    if not text:
        raise ValueError("expected a directory path")
    return Path(text).expanduser()


def _file(text: str) -> Path:
    if not text:
        raise ValueError("expected a file path")
    return Path(text).expanduser()


def _port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise ValueError("expected a TCP port 1..65535")
    return value


@dataclass(frozen=True)
class Option:
    name: str  # LauncherConfig field
    parse: Callable[[str], object]
    help: str
    metavar: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


# The "why" of each default is in launcher/README.md.
OPTIONS: tuple[Option, ...] = (
    Option(
        "probe", _probe_kind, "memory probe: auto (NVML if a GPU is visible, else RSS), nvml or rss", "KIND"
    ),
    Option("gpu_index", whole(0), "NVML index of the GPU the app uses", "N"),
    Option(
        "threshold_mib",
        _mebibytes,
        "restart above this much memory (MiB); overrides --threshold-ratio",
        "MIB",
    ),
    Option("threshold_ratio", _ratio, "restart above this fraction of the GPU's (or RAM's) total", "RATIO"),
    Option(
        "host_threshold_ratio",
        _ratio_or_off,
        "with the GPU probe, also restart when the app's resident memory passes this fraction of the host's RAM "
        "(or the container's memory limit); 0: off",
        "RATIO",
    ),
    Option("consecutive", whole(1), "samples in a row over the threshold before a restart", "N"),
    Option("grace_s", seconds(0), "after each start, memory samples do not count for this long", "SECONDS"),
    Option(
        "poll_s", seconds(0, inclusive=False), "seconds between memory samples and health probes", "SECONDS"
    ),
    Option("health_host", _host, "host to probe /readyz on", "HOST"),
    Option("health_failures", whole(1), "readiness failures in a row (after start-up) that mean a hang", "N"),
    Option("health_timeout_s", seconds(0, inclusive=False), "timeout of one /readyz probe", "SECONDS"),
    Option(
        "startup_timeout_s",
        seconds(0, inclusive=False),
        "a start not ready within this is a failed start",
        "SECONDS",
    ),
    Option(
        "drain_s",
        seconds(0),
        "after SIGTERM, wait this long for the app to drain before SIGKILL; also passed to the app as its "
        "--drain-s",
        "SECONDS",
    ),
    Option(
        "release_timeout_s",
        seconds(0),
        "wait at most this long for the old process's memory to be freed",
        "SECONDS",
    ),
    Option(
        "backoff_initial_s",
        seconds(0, inclusive=False),
        "first delay before a restart (doubles each time)",
        "SECONDS",
    ),
    Option("backoff_max_s", seconds(0, inclusive=False), "cap of the restart delay", "SECONDS"),
    Option("stable_s", seconds(0), "a run this long (since ready) resets the backoff", "SECONDS"),
    Option(
        "max_restarts", whole(0), "more restarts than this within --restart-window-s is flapping: exit 3", "N"
    ),
    Option(
        "restart_window_s", seconds(0, inclusive=False), "the sliding window of the restart budget", "SECONDS"
    ),
    Option("state_dir", _directory, "where launcher-events.jsonl and launcher-status.json live", "DIR"),
    Option("events_max_lines", whole(1), "launcher-events.jsonl keeps at most this many newest lines", "N"),
    Option(
        "pid_file",
        _file,
        "hold a lock on this file and write the launcher's PID in it while it runs; a second launcher with the "
        "same file refuses to start",
        "FILE",
    ),
    Option(
        "log_file",
        _file,
        "run in the background: detach into a new session, append stdout and stderr to this file, and return "
        "once started",
        "FILE",
    ),
)

DRAIN_OPTION = next(o for o in OPTIONS if o.name == "drain_s")
APP_DRAIN_ENV = "WENMO_DRAIN_S"  # the app's own name for the drain (app/config.py), read by the app itself


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launcher",
        usage="python -m launcher [options] [APP OPTIONS] [-- COMMAND ...]",
        description=(
            "Keep the Wenmo app alive: restart it when it crashes, hangs or holds too much memory. "
            "Options it does not recognise are passed to `python -m app serve`."
        ),
        epilog="exit status: 0 stopped on request, 2 invalid configuration, 3 flapping (too many restarts)",
        allow_abbrev=False,  # an app option such as --port must never be taken for a launcher prefix
    )
    for option in OPTIONS:
        default = _jsonable(LauncherConfig.__dataclass_fields__[option.name].default)
        if default is None:
            default = "unset"
        if option.name == "state_dir":
            default = "$WENMO_STATE_DIR or ~/.local/state/wenmo"
        if option.name == "drain_s":
            default = f"${APP_DRAIN_ENV}, which the app reads itself, or {default}"
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.metavar,
            help=f"{option.help} (default {default}; env {option.env})",
        )
    return parser


def load_config(
    argv: Sequence[str], environ: Mapping[str, str], python: str = sys.executable
) -> LauncherConfig:
    """Resolve flags, ``WENMO_LAUNCHER_*`` variables and defaults into a validated config."""
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
        if not command:
            raise ConfigError("nothing after `--`: give the command to run, or drop the `--`")
    namespace, passthrough = build_parser().parse_known_args(argv)
    if command and passthrough:
        raise ConfigError(
            f"unrecognised launcher option(s) {' '.join(passthrough)}; app options go after `--` "
            "when a COMMAND is given"
        )

    values: dict[str, object] = {}
    explicit: set[str] = set()
    for option in OPTIONS:
        flag_value = getattr(namespace, option.name)
        if flag_value is not None:
            source, text = option.flag, flag_value
        elif option.env in environ:
            source, text = option.env, environ[option.env]
        else:
            continue
        try:
            values[option.name] = option.parse(text)
        except ValueError as exc:
            raise ConfigError(f"invalid {source}={text!r}: {exc}") from None
        explicit.add(option.name)

    if {"threshold_mib", "threshold_ratio"} <= explicit:
        raise ConfigError("set --threshold-mib or --threshold-ratio, not both (MiB overrides the ratio)")
    initial = cast(float, values.get("backoff_initial_s", LauncherConfig.backoff_initial_s))
    maximum = cast(float, values.get("backoff_max_s", LauncherConfig.backoff_max_s))
    if maximum < initial:
        raise ConfigError(f"--backoff-max-s {maximum:g} is below --backoff-initial-s {initial:g}")

    if "state_dir" not in values:
        values["state_dir"] = _default_state_dir(environ)

    app_drain = _app_drain_s(environ)
    if "drain_s" not in explicit and app_drain is not None:
        values["drain_s"] = app_drain  # the app's own figure: it reads the variable itself, nothing to pass
    elif (
        "drain_s" in explicit
        and namespace.drain_s is None  # from WENMO_LAUNCHER_DRAIN_S; a flag wins, as the app's flags do
        and app_drain is not None
        and app_drain != values["drain_s"]
    ):
        raise ConfigError(
            f"WENMO_LAUNCHER_DRAIN_S={environ[DRAIN_OPTION.env]} and {APP_DRAIN_ENV}={environ[APP_DRAIN_ENV]} "
            "disagree: the app drains for one figure and the launcher waits as long before SIGKILL; give both "
            f"the same value, or set only {APP_DRAIN_ENV}"
        )
    if command:
        port = _port_in(command)
    else:
        port = _port_in(passthrough)
        command = [python, "-m", "app", "serve", *passthrough]
        if "drain_s" in explicit:
            # The launcher's own --drain-s / WENMO_LAUNCHER_DRAIN_S: the app cannot see either, so it gets the
            # figure as its flag, and its drain and the launcher's patience before SIGKILL agree.
            command += ["--drain-s", f"{cast(float, values['drain_s']):g}"]
    if port is None:
        port = _parse_port("WENMO_PORT", environ["WENMO_PORT"]) if "WENMO_PORT" in environ else DEFAULT_PORT

    return LauncherConfig(
        command=tuple(command),
        port=port,
        probe_auth=environ.get("WENMO_AUTH") or None,
        **values,  # type: ignore[arg-type]
    )


def _app_drain_s(environ: Mapping[str, str]) -> float | None:
    """The app's WENMO_DRAIN_S, checked as the app checks it (seconds >= 0; empty means unset), or None."""
    text = environ.get(APP_DRAIN_ENV, "")
    if not text:
        return None
    try:
        return DRAIN_OPTION.parse(text)  # type: ignore[return-value]
    except ValueError as exc:
        raise ConfigError(f"invalid {APP_DRAIN_ENV}={text!r}: {exc}") from None


def _default_state_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("WENMO_STATE_DIR"):
        return _directory(environ["WENMO_STATE_DIR"])
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return home / ".local" / "state" / "wenmo"


def _port_in(args: Sequence[str]) -> int | None:
    """The value of the last ``--port N`` / ``--port=N`` in ``args`` (argparse semantics: last wins)."""
    port = None
    for i, arg in enumerate(args):
        if arg == "--port":
            if i + 1 >= len(args):
                raise ConfigError("--port needs a value, e.g. --port 7860")
            port = _parse_port("--port", args[i + 1])
        elif arg.startswith("--port="):
            port = _parse_port("--port", arg.split("=", 1)[1])
    return port


def _parse_port(source: str, text: str) -> int:
    try:
        return _port(text)
    except ValueError as exc:
        raise ConfigError(f"invalid {source}={text!r}: {exc}") from None


def _jsonable(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
