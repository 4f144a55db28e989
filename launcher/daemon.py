"""Running without systemd: the pid file and the detach into the background (``--pid-file``, ``--log-file``).

The pid file is also a lock: the launcher holds ``flock(LOCK_EX)`` on it for as long as it runs, so "is it
running?" is "is the lock held?" (``flock -n FILE true`` fails), whatever PID has been reused since, and a second
launcher on the same file refuses to start. The lock lives with the open file description, which the detached
child inherits: the parent takes it (so an error still reaches the terminal), forks, writes the child's PID and
returns; the child leads a new session with its output appended to the log file.

This module must not import ``app``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class PidFileBusyError(RuntimeError):
    """Another launcher holds the pid file."""


def lock_pid_file(path: Path) -> int:
    """Open and lock ``path``; the descriptor, kept open for the launcher's lifetime. Raises PidFileBusyError when
    another launcher holds it, OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PidFileBusyError(f"another launcher (pid {holder}) holds {path}; stop it first") from None
    return fd


def write_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def detach(log_file: Path, pid_fd: int | None) -> None:
    """Fork into the background. Returns in the child only: the parent writes the child's PID into the pid file
    and exits 0 (the child's status is the supervisor's business from now on)."""
    log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)  # fails here, on the terminal
    pid = os.fork()
    if pid:
        if pid_fd is not None:
            write_pid(pid_fd, pid)
        os._exit(0)
    os.setsid()  # no terminal: a hang-up of the shell that started it does not reach it
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)


def release(path: Path, fd: int) -> None:
    """Remove the pid file at exit (only while this process still holds it) and drop the lock."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
