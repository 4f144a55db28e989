"""The app's process: spawn it in its own session, signal its process group, wait, kill.

Thin on purpose: every decision about *when* lives in ``policy``. The app runs as the leader of a new
session (``start_new_session=True``) so that one ``killpg`` reaches every worker it forks, and so that a
Ctrl-C at the launcher's terminal reaches only the launcher, which then drains the app itself.

This module must not import ``app``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

PR_SET_PDEATHSIG = 1  # prctl(2)


def _stop_with_launcher() -> None:
    """In the child before exec: SIGTERM (a drain) when the launcher dies, even by SIGKILL, so that no app is left
    holding the port and the GPU with nobody to stop it (without systemd's cgroup nothing else would)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the launcher's own stop still drains the app
        pass


class ChildProcess:
    """One running incarnation of the app."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @classmethod
    def spawn(cls, argv: Sequence[str], env: Mapping[str, str] | None = None) -> ChildProcess:
        """Start ``argv``; ``env=None`` passes the launcher's own environment through unchanged.

        The app's stdout goes to the launcher's stderr so that the launcher's stdout stays a pure stream
        of JSON event lines; the app's stderr is inherited.
        """
        popen = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            start_new_session=True,
            preexec_fn=_stop_with_launcher,  # the launcher has no threads: preexec_fn is safe here
        )
        return cls(popen)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        """The exit status once exited (negative: killed by that signal), else None."""
        return self._popen.poll()

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the app's whole process group; False when no member is left."""
        try:
            # The leader's PID is the group ID: start_new_session made it a session and group leader.
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            # The group ID now belongs to processes we do not own: nothing of ours is left in it.
            return False
        return True

    def terminate(self) -> bool:
        """SIGTERM the group: the app drains in-flight requests and exits."""
        return self.signal_group(signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL the group: the drain deadline passed, or the leader exited and left workers behind."""
        return self.signal_group(signal.SIGKILL)
