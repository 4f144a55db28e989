"""`python -m bench bench|loadtest …`: the same commands as `python -m app bench|loadtest`.

The parser, settings and exit codes are app/cli.py's; this entry point only forwards to it.
"""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
