"""``python -m launcher``: the composition root of the watchdog.

argv + environment → ``LauncherConfig`` → (pid file, background: ``daemon``) → probe → event log →
supervisor; installs the SIGTERM/SIGINT handlers and returns the exit status (0 stopped, 2 invalid
configuration, 3 flapping; see README.md).
This module must not import ``app``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from launcher import EXIT_USAGE
from launcher.config import ConfigError, LauncherConfig, load_config
from launcher.daemon import PidFileBusyError, detach, lock_pid_file, release, write_pid
from launcher.events import EventLog, MemoryLog, StatusFile
from launcher.probes import ProbeUnavailableError, host_probe, select_probe
from launcher.supervisor import Supervisor


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="launcher: %(levelname)s %(message)s"
    )
    try:
        config = load_config(
            sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ
        )
    except ConfigError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    pid_fd = None
    try:
        if config.pid_file is not None:
            pid_fd = lock_pid_file(config.pid_file)
        if config.log_file is not None:
            detach(config.log_file, pid_fd)  # from here on in the background child
        elif pid_fd is not None:
            write_pid(pid_fd, os.getpid())
    except (PidFileBusyError, OSError) as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return supervise(config)
    finally:
        if pid_fd is not None and config.pid_file is not None:
            release(config.pid_file, pid_fd)


def supervise(config: LauncherConfig) -> int:
    try:
        events = EventLog(config.state_dir, config.events_max_lines)
    except OSError as exc:
        print(
            f"launcher: cannot use state directory {config.state_dir}: {exc}; set --state-dir",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        probe, reason = select_probe(config.probe, config.gpu_index)
    except ProbeUnavailableError as exc:
        print(f"launcher: --probe {config.probe}: {exc}; use --probe auto or rss", file=sys.stderr)
        return EXIT_USAGE
    supervisor = Supervisor(
        config,
        probe,
        events,
        StatusFile(config.state_dir),
        probe_reason=reason,
        host_probe=host_probe(probe, config.host_threshold_ratio),
        memory_log=MemoryLog(config.state_dir),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: supervisor.request_stop(signal.Signals(number).name))
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
