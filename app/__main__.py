"""`python -m app …`: the shell entry point (see app/cli.py).

`profile` is answered here by app/hostprofile.py alone, which needs nothing but the standard library: deploy.sh
asks it with the system Python before the virtualenv (numpy, torch, gradio) exists. Every other command goes
through app/cli.py.
"""

import sys

from app import hostprofile

if __name__ == "__main__":
    if sys.argv[1:2] == ["profile"]:
        sys.exit(hostprofile.main(sys.argv[2:]))
    from app.cli import main

    sys.exit(main())
