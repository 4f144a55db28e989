"""Model resolution: a local directory, or a ModelScope id downloaded once into the cache.

An id `owner/name` is fetched with `modelscope.hub.snapshot_download` into `<model_dir>/owner/name`; a
marker file written after a complete download lets later starts load from disk without touching the
network. Failures become a ModelUnavailableError that names the id, the cache directory and the fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from app.errors import ModelUnavailableError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".wenmo-complete"
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
