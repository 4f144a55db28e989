"""The models step: each model the settings name is a local directory, already complete in the models directory,
or downloaded there now by the app's own resolver (app/engine/loading.py, run with the virtualenv's Python: the
layout and completion marker the service looks for). Then the service user must be able to read each one."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.deploy import Stop

RESOLVE = "import sys; from app.engine.loading import resolve_model; print(resolve_model(sys.argv[1], sys.argv[2]))"


def run(cmd: Sequence[str], dry_run: bool, cwd: Path | None = None) -> bool:
    """deploy.sh's `run`: print the command, then run it (a dry run only prints it)."""
    print(f"    {'would run:' if dry_run else '+'} {shlex.join(cmd)}", flush=True)
    return dry_run or subprocess.run(cmd, cwd=cwd).returncode == 0


def as_user(user: str, group: str, cmd: Sequence[str]) -> list[str]:
    """deploy.sh's `as_user`: as root, the command run as the service user."""
    if os.geteuid() == 0 and user != "root":
        return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--", *cmd]
    return list(cmd)


def fetch(ids: Mapping[str, str], model_dir: Path, venv: Path, src: Path, user: str, group: str,
          dry_run: bool) -> None:
    """`ids`: role -> ModelScope id or local directory. As root, the downloads are given to the service user."""
    todo = {role: i for role, i in ids.items()
            if not Path(i).is_dir() and not (model_dir / i / ".wenmo-complete").exists()}
    for role, i in ids.items():
        if Path(i).is_dir():
            print(f"    {role} model: local directory {i}")
        elif role not in todo:
            print(f"    {role} model: {i} already in {model_dir}")
    for role, i in todo.items():
        target = model_dir / i
        print(f"    {role} model: downloading {i} from ModelScope into {target}")
        if not run([str(venv / "bin" / "python"), "-c", RESOLVE, i, str(model_dir)], dry_run, None if dry_run else src):
            raise Stop(f"downloading the {role} model {i} into {target} failed (see the message above)",
                       "Re-run the same command to retry: files already downloaded are kept and partial ones resume.",
                       f"Without network to modelscope.cn: copy the model directory from another machine to {target},",
                       f"create the empty file {target}/.wenmo-complete, and re-run (or point --models-dir at an "
                       "existing copy).")
        if os.geteuid() == 0:
            run(["chown", "-R", f"{user}:{group}", str(target)], dry_run)
    if dry_run:
        return
    for role, i in ids.items():  # an existing copy (--models-dir) must be readable by the service user
        target = Path(i) if Path(i).is_dir() else model_dir / i
        readable = ["test", "-r", f"{target}/config.json", "-a", "-x", str(target)]
        if subprocess.run(as_user(user, group, readable)).returncode:
            raise Stop(f"the service user {user} cannot read the {role} model in {target}",
                       f"give it access (e.g. chmod -R a+rX {target} and the directories above it) and re-run")
