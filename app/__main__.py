"""`python -m app …` and the installed `wenmo` command: the shell entry point (the commands are in app/cli.py).

Imports nothing but the standard library before app.cli, so a Python without the dependencies (the system's
python3, outside .venv) gets one line that names the missing package and what to run, instead of a traceback.
That is why pyproject.toml's `wenmo` script points here and not at app.cli.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from app.dependencies import EXIT_MISSING_DEPENDENCY, missing_dependency


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from app.cli import main as cli_main
    except ModuleNotFoundError as e:
        message = missing_dependency(e)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return EXIT_MISSING_DEPENDENCY
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
