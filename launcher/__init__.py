"""Wenmo launcher: a watchdog process that keeps the app alive.

It spawns ``python -m app serve`` (or any command given after ``--``), probes its readiness over HTTP and
its memory (NVML per process, device-level NVML, or RSS), and restarts it with hysteresis, a grace
period, a drain, exponential backoff and a restart budget. Every decision is a JSON line on stdout and in
``launcher-events.jsonl`` under the state directory.

This package must not import ``app``: it talks to the app only through argv, environment and HTTP, so a
broken app can never break its own watchdog.

Layout (one-way imports): ``config`` (the only reader of the environment) → ``policy`` (pure state
machine) ← ``supervisor`` (the loop) → ``probes``, ``health``, ``child``, ``events``.
"""

# Exit statuses of ``python -m launcher`` (documented in launcher/README.md).
EXIT_OK = 0  # stopped on SIGTERM/SIGINT after draining the app
EXIT_ERROR = 1  # unexpected launcher error (Python's own status for an uncaught exception)
EXIT_USAGE = 2  # invalid option or environment value, requested probe unavailable, state dir unusable
EXIT_FLAPPING = 3  # too many restarts within the window: stop so systemd's own start limits take over
