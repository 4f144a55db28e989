"""The files deploy.sh installs besides the settings (app/settingsfiles.py): the systemd unit, deploy.conf (its
record of the installation) and ds_config.json. Each written atomically, or shown in a dry run."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from app.settingsfiles import put_file, read_env


def write_record(etc: Path, values: Sequence[str], dry_run: bool) -> None:
    """deploy.conf: KEY=VALUE lines read by re-runs and by status/logs/stop/uninstall."""
    lines = ["# deploy.sh's record of this installation (read by re-runs and by status/logs/stop/uninstall).",
             *values, f"installed={time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}"]
    put_file(etc / "deploy.conf", "\n".join(lines) + "\n", dry_run)
    if not dry_run:  # installed again: no longer the record an uninstall kept aside
        (etc / ".deploy.conf.uninstalled").unlink(missing_ok=True)


def install_ds_config(etc: Path, new: Path, dry_run: bool) -> None:
    """ds_config.json follows the code's default until you edit it; then yours is kept and the new default is
    left beside it as ds_config.json.new. `.ds_config.json.dist` remembers the default installed last."""
    installed, dist, text = etc / "ds_config.json", etc / ".ds_config.json.dist", new.read_text()
    mine = installed.read_text() if installed.exists() else None
    if mine is None or (dist.exists() and mine == dist.read_text()):
        if mine != text:
            put_file(installed, text, dry_run, show=False)
    elif mine != text:
        print(f"    keeping your edited {installed}; the new default is {installed}.new")
        put_file(installed.with_name("ds_config.json.new"), text, dry_run, show=False)
    if not dist.exists() or dist.read_text() != text:
        put_file(dist, text, dry_run, show=False)


CODE = ("app", "launcher", "bench", "deploy.sh", "ds_config.json", "requirements.txt", "pyproject.toml", "README.md")


def install_code(repo: Path, src: Path, dry_run: bool) -> str:
    """Copy the code (no caches) to `src`, replacing the old copy in one rename; readable by everyone, owned by
    whoever runs deploy.sh."""
    items = [item for item in CODE if (repo / item).exists()]
    if dry_run:
        return f"would copy {' '.join(items)} from {repo} to {src} (replacing the old copy in one rename)"
    new, old = src.with_name("src.new"), src.with_name("src.old")
    for stale in (new, old):
        shutil.rmtree(stale, ignore_errors=True)
    new.mkdir(parents=True)
    caches = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in items:
        if (repo / item).is_dir():
            shutil.copytree(repo / item, new / item, symlinks=True, ignore=caches)
        else:
            shutil.copy2(repo / item, new / item)
    for path in (new, *new.rglob("*")):  # u=rwX,go=rX
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o100 else 0o644)
    if src.exists():
        src.rename(old)
    new.rename(src)
    shutil.rmtree(old, ignore_errors=True)
    return f"code: {' '.join(items)} -> {src}"


def remove(paths: Sequence[Path], dry_run: bool) -> None:
    """`rm -rf`, printed as deploy.sh prints what it runs."""
    print(f"    {'would run:' if dry_run else '+'} rm -rf {' '.join(shlex.quote(str(p)) for p in paths)}")
    for path in paths if not dry_run else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def uninstall(prefix: Path, state_dir: Path, user: str, user_created: bool, purge: bool, dry_run: bool) -> None:
    """Everything deploy.sh installed but the service (deploy.sh has stopped and removed it). A plain uninstall
    keeps the models, the password, your settings and the state; its record is kept aside, so that a later
    --purge knows what to remove."""
    etc = prefix / "etc"
    record, kept = etc / "deploy.conf", etc / ".deploy.conf.uninstalled"
    if record.exists():
        print(f"    {'would run:' if dry_run else '+'} mv {record} {kept}")
        if not dry_run:
            record.rename(kept)
    remove([prefix / "venv", prefix / "src", prefix / "run", prefix / "log", etc / "wenmo.env",
            etc / ".wenmo.env.written", etc / "wenmo.env.bak", etc / "ds_config.json.new", etc / ".ds_config.json.dist",
            prefix / ".deploy.lock"], dry_run)
    yours = [prefix / "models", etc / "credentials" / "wenmo-auth", etc / "wenmo.override.env", etc / "ds_config.json",
             state_dir]
    if not purge:
        print("    removed the service, the code and the virtualenv")
        if kept_items := [str(p) for p in yours if p.exists()]:
            print(f"    kept (--purge deletes them too): {' '.join(kept_items)}")
        return
    override = etc / "wenmo.override.env"
    models = read_env(override.read_text() if override.exists() else "").get("WENMO_MODEL_DIR", f"{prefix}/")
    if not models.startswith(f"{prefix}/"):
        print(f"    not deleting your models directory {models} (outside {prefix})")
    ours = state_dir == Path("/var/lib/wenmo") or state_dir.is_relative_to(prefix)
    remove([prefix / "models", etc / "credentials", *yours[2:4], kept, *([state_dir] if ours else [])], dry_run)
    if user_created and subprocess.run(["id", "-u", user], capture_output=True).returncode == 0:
        print(f"    {'would run:' if dry_run else '+'} userdel {user}", flush=True)
        if not dry_run:
            subprocess.run(["userdel", user])
    for directory in (etc, prefix) if not dry_run else ():
        with contextlib.suppress(OSError):
            directory.rmdir()
    print(f"    purged {prefix}")
