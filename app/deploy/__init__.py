"""deploy.sh's Python side: what need not be shell.

deploy.sh keeps the checks that must be shell (the OS, root, systemd, Python itself, the disk), the service user,
the virtualenv, the credential file and the waiting; it asks `python3 -m app.deploy COMMAND` (app/deploy/__main__.py)
for its help text, the GPU check (nvidia-smi), the port and readiness probes, the check that the service user can
reach the prefix, the systemd unit, the closing summary and the check of the installed torch. The profile and the
settings files are `python -m app profile` (app/hostprofile.py, app/settingsfiles.py).

deploy.sh runs these with the system Python before the virtualenv exists, from its own checkout: standard library
only, here and in everything imported (never app.cli, app.engine.loading or anything that needs numpy or torch).
`torch` is the exception: the virtualenv's Python runs it as the service user. A check that fails raises `Stop`,
which is printed the way deploy.sh prints its own errors: what was wrong, then what to do, one hint a line.
"""

from __future__ import annotations


class Stop(Exception):
    """deploy.sh must stop here: `message` says what is wrong, each of `hints` (a line) what to do."""

    def __init__(self, message: str, *hints: str) -> None:
        super().__init__(message)
        self.message, self.hints = message, hints

    def render(self) -> str:
        return f"\ndeploy.sh: error: {self.message}\n" + "".join(f"    {h}\n" for h in self.hints)
