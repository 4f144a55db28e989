"""`python -m app …` and the installed `wenmo` command: the shell entry point (the commands are in app/cli.py).

`profile` is answered by app/hostprofile.py alone, which needs nothing but the standard library: deploy.sh asks it
with the system Python before the virtualenv (numpy, torch, gradio) exists. Every other command goes through
app/cli.py. A Python without the dependencies (the system's python3, outside .venv) fails on importing app.cli;
that failure is caught here and becomes one line naming the missing package and what to run, instead of a
traceback. That is why pyproject.toml's `wenmo` script points here and not at app.cli.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from app import hostprofile
from app.dependencies import EXIT_MISSING_DEPENDENCY, missing_dependency

try:
    from app.cli import main as cli_main
except ModuleNotFoundError as e:
    MISSING = missing_dependency(e)
    if MISSING is None:  # a module of the checkout itself: a bug, with its traceback
        raise
    cli_main = None
else:
    MISSING = None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["profile"]:  # the standard library's alone: answered with or without the dependencies
        return hostprofile.main(args[1:])
    if cli_main is None:
        print(MISSING, file=sys.stderr)
        return EXIT_MISSING_DEPENDENCY
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
