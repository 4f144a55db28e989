"""What to say when this Python cannot import a package Wenmo needs (the system's python3 outside .venv, a venv
that was never installed into). Used by the entry point before anything else (app/__main__.py) and by the shell's
error renderer for the packages the model code imports late (torch, transformers).

Imports nothing but the standard library: it must work where the dependencies are missing.
"""

from __future__ import annotations

import sys

# Packages of this checkout: a ModuleNotFoundError for one of them is a broken checkout, not a missing dependency.
OWN_PACKAGES = ("app", "launcher", "bench")
# Fixed by changing the environment, as bad settings are: InputError's status (app/errors.py).
EXIT_MISSING_DEPENDENCY = 2


def missing_dependency(error: ModuleNotFoundError) -> str | None:
    """One line naming the missing package and what to run, or None when `error` is about a module of the checkout
    itself (or names no module)."""
    top = (error.name or "").partition(".")[0]
    if not top or top in OWN_PACKAGES:
        return None
    return (f"error: {sys.executable} cannot import {top!r}, a package Wenmo needs (this Python lacks Wenmo's "
            "dependencies): run tests/run.sh or ./deploy.sh first, or use .venv/bin/wenmo")
