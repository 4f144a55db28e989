"""Model resolution: a local directory, or a ModelScope id downloaded once into the cache.

An id `owner/name` is fetched with `modelscope.hub.snapshot_download` into `<model_dir>/owner/name`; a
marker file written after a complete download lets later starts load from disk without touching the
network. Failures become a ModelUnavailableError that names the id, the cache directory and the fix.

`download_models` is `wenmo download`: the same resolution for every model the settings name, ahead of the
server (a Kubernetes init container fills the shared model volume once), under a lock in the cache so that
replicas starting together wait for one download instead of writing the same files at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from app.errors import ModelUnavailableError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".wenmo-complete"
DOWNLOAD_LOCK = ".wenmo-download.lock"  # in the cache's top directory: one `wenmo download` at a time per cache
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Downloader = Callable[[str, Path], None]


def modelscope_download(model_id: str, target: Path) -> None:
    from modelscope.hub.snapshot_download import snapshot_download

    snapshot_download(model_id, local_dir=str(target))


def cached_path(model_id: str, model_dir: str | Path) -> Path:
    return Path(model_dir).expanduser() / model_id


def resolve_model(arg: str, model_dir: str | Path, download: Downloader = modelscope_download) -> Path:
    """Return a local directory holding the model named by `arg`."""
    local = Path(arg).expanduser()
    if local.is_dir():
        return local.resolve()
    if not _MODEL_ID.match(arg) or arg.startswith((".", "/", "~")):
        raise ModelUnavailableError(
            f"model {arg!r}: no such directory, and not a ModelScope id of the form owner/name; "
            "pass an existing local directory or an id such as iic/nlp_gte_sentence-embedding_chinese-large"
        )
    target = cached_path(arg, model_dir)
    if (target / COMPLETE_MARKER).exists():
        return target
    log.info("event=model_download id=%s target=%s", arg, target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        download(arg, target)
    except Exception as e:  # noqa: BLE001 - network, hub and disk errors all end the same way for the user
        raise ModelUnavailableError(
            f"model {arg!r} is not in the cache ({target}) and could not be downloaded from ModelScope "
            f"({type(e).__name__}). Fix: on a machine with network access run "
            f"`python -c \"from modelscope.hub.snapshot_download import snapshot_download; "
            f"snapshot_download('{arg}', local_dir='{arg.split('/')[-1]}')\"` and copy that directory to "
            f"{target} (then create the empty file {target / COMPLETE_MARKER}), or pass the local directory "
            "instead of the id; WENMO_MODEL_DIR / --model-dir changes the cache location."
        ) from None
    (target / COMPLETE_MARKER).touch()
    return target


@contextlib.contextmanager
def download_lock(model_dir: str | Path, on_wait: Callable[[Path], object]) -> Iterator[None]:
    """Hold the cache's download lock; `on_wait(lock_path)` is called once when another process holds it (then
    this one blocks until it is released: that process's download is complete or failed, and resolving again
    finds the marker or starts over). flock: on NFS (a ReadWriteMany volume) Linux maps it to a POSIX lock."""
    root = Path(model_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / DOWNLOAD_LOCK, "a")  # closed by the `with` below, after the lock is released
    except OSError as e:
        raise ModelUnavailableError(
            f"cannot write the model cache {root} ({e.strerror}); give a writable directory with --model-dir / "
            "WENMO_MODEL_DIR (in Kubernetes: the model volume must be mounted read-write in the download step)"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(root / DOWNLOAD_LOCK)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_models(models: Mapping[str, str], model_dir: str | Path, report: Callable[[str], object],
                    download: Downloader = modelscope_download) -> dict[str, Path]:
    """Make every model in `models` (role -> ModelScope id or local directory) complete in the cache; what
    `report` is told per model: a local directory, already complete, or downloaded now. Nothing is fetched for
    a model whose completion marker is there, so a second run (every replica's init container) is a no-op."""
    local = {role: arg for role, arg in models.items() if Path(arg).expanduser().is_dir()}
    for role, arg in local.items():
        report(f"{role}: {arg} is a local directory; nothing to download")
    wanted = {role: arg for role, arg in models.items() if role not in local}
    done = {role: Path(arg).expanduser().resolve() for role, arg in local.items()}
    if not wanted:
        return done

    def waiting(lock: Path) -> None:
        report(f"waiting for another download into {Path(model_dir).expanduser()} to finish (lock {lock})")

    with download_lock(model_dir, waiting):
        for role, arg in wanted.items():
            target = cached_path(arg, model_dir)
            if _MODEL_ID.match(arg) and (target / COMPLETE_MARKER).exists():
                report(f"{role}: {arg} already complete in {target}")
                done[role] = target
                continue
            report(f"{role}: downloading {arg} from ModelScope into {target}")
            done[role] = resolve_model(arg, model_dir, download)
            report(f"{role}: {arg} complete in {done[role]}")
    return done
