"""What deploy.sh asks of this machine before and after installing: is the port free, does the service answer,
can the service user reach the prefix, does the installed torch work (and see the GPU)."""

from __future__ import annotations

import importlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from app.deploy import Stop


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound, or None when it can."""
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def port_holder(port: int) -> str:
    """The program listening on `port` as `ss` names it ("python3",pid=1234,fd=3), or ''."""
    if shutil.which("ss") is None:
        return ""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"users:\(\(([^)]*)", out)
    return m.group(1) if m else ""


def check_port(host: str, port: int, ours_running: bool, prog: str) -> str:
    why = port_problem(host, port)
    if why is None:
        return f"port: {port} on {host} is free"
    if ours_running:
        return f"port: {port} is held by the running Wenmo, which will be restarted"
    holder = port_holder(port)
    raise Stop(f"port {port} on {host} is not available: {why}" + (f" (held by {holder})" if holder else ""),
               f"stop the program that holds it, or choose another port: {prog} --port 8080 ...")


def base_url(host: str, port: str) -> str:
    """Where to reach the service from this machine: loopback when it binds every interface."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{port}/"


def http_status(url: str) -> str:
    """The HTTP status of GET `url` (no proxy), 000 when nothing answers."""
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except Exception:
        return "000"


def check_traversable(user: str, prefix: Path) -> None:
    """The service user runs <prefix>/venv/bin/python: every directory above the prefix must let it through
    (mktemp -d makes 0700 directories; a home directory often is 0700 or 0750)."""
    directory = prefix
    while not directory.exists():
        directory = directory.parent
    for d in (directory, *directory.parents):
        st = d.stat()
        owner = _user_name(st.st_uid)
        if owner != user and not st.st_mode & stat.S_IXOTH:
            raise Stop(f"the service user {user} cannot enter {d} (mode {stat.S_IMODE(st.st_mode):o}, owner {owner}), "
                       f"so it cannot run the code under {prefix}",
                       f"make it traversable (chmod o+x {d}) or choose a --prefix outside it (the default /opt/wenmo "
                       "works)")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def torch_report(cpu: bool, driver: str, sudo: str) -> list[str]:
    """Run by the virtualenv's Python as the service user: the installed torch, the GPU it sees (unless `cpu`),
    and the code importing with this virtualenv. A failed import propagates (deploy.sh reports its last line)."""
    import torch

    # The code imports with this virtualenv: what this function is run to find out, so imported here by name.
    importlib.import_module("app.config")
    importlib.import_module("launcher.config")

    build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}"
    if cpu:
        return [build]
    if torch.version.cuda is None:
        raise Stop(f"the installed torch is a CPU-only build ({build})",
                   "remove a CPU index from WENMO_DEPLOY_PIP_ARGS / pip.conf and re-run, or run on the CPU: --cpu")
    if not torch.cuda.is_available():
        raise Stop(f"torch cannot see the GPU ({build}; driver {driver})",
                   f"the driver is probably older than this CUDA build needs: upgrade it ({sudo}ubuntu-drivers "
                   "install) and reboot,", "or run on the CPU: --cpu")
    p = torch.cuda.get_device_properties(0)
    return [build, f"torch sees {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}"]


def free_space(path: Path) -> tuple[int, str]:
    """(MiB free, mount point) for `path` or its nearest existing parent, as `df` reports them."""
    while not path.exists():
        path = path.parent
    out = subprocess.run(["df", "-Pk", str(path)], capture_output=True, text=True, check=True).stdout
    fields = out.splitlines()[1].split()
    return int(fields[3]) // 1024, fields[5]


def check_disk(needs: Sequence[tuple[str, str, str]]) -> list[str]:
    """`needs`: (path, MiB, what) to be written there. Needs on one file system add up."""
    mounts: dict[str, tuple[int, int, str]] = {}  # mount: (free, needed, what)
    for path, mib, what in needs:
        free, mount = free_space(Path(path))
        _, needed, whats = mounts.get(mount, (free, 0, ""))
        mounts[mount] = (free, needed + int(mib), f"{whats} {what} ({mib} MiB)")
    for mount, (free, needed, what) in mounts.items():
        if free < needed:
            raise Stop(f"not enough disk space on {mount}: {free} MiB free, {needed} MiB needed for{what}",
                       "free some space, grow the disk, or put the models elsewhere: "
                       "--models-dir /bigdisk/wenmo-models")
    return [f"disk: {free} MiB free on {mount} (needs {needed} MiB for{what})" for mount, (free, needed, what)
            in mounts.items()] or ["disk: nothing new to download or install"]


def check_writable(path: Path, what: str, create: bool) -> None:
    """Before anything is created: can `path` be created (its nearest existing parent is a writable directory)?
    With `create`, create it for real, since access(2) can be wrong (NFS root squash, ACLs)."""
    elsewhere = "choose another location (--prefix / --models-dir)"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / ".wenmo-write-test").touch()
            (path / ".wenmo-write-test").unlink()
        except OSError as e:
            raise Stop(f"cannot write {what} {path}: {e.strerror}", elsewhere) from None
        return
    base = path
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise Stop(f"cannot create {what} {path}: {base} is not a directory", elsewhere)
    if not os.access(base, os.W_OK):
        root = os.geteuid() == 0
        who = " (read-only file system?)" if root else f" by {_user_name(os.geteuid())}"
        raise Stop(f"cannot write {what} {path}: {base} is not writable{who}",
                   elsewhere + ("" if root else ", or run with sudo"))
