"""Where a tuned checkpoint goes, and writing it in its source's own layout.

The output is a new directory (default `<model dir>/tuned/<role>-<YYYYmmdd-HHMMSS>`), never the source and never
an existing directory. It is written into a hidden staging folder beside the target (`.<name>.partial-<pid>`) and
renamed into place when complete, so a cancelled or killed job leaves no half checkpoint under the final name;
stale staging folders of dead processes are removed by the next tune.

Layout: every file of the source (configuration.json, config.json, vocab and tokenizer files) copied as it is,
and the weights in the source's own file (pytorch_model.bin or model.safetensors), with the source's key names
and dtypes: keys training did not touch (e.g. an unused pooler) keep their source values. So Wenmo, transformers
and ModelScope load it exactly as they load the original.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from app.engine.loading import COMPLETE_MARKER
from app.errors import InputError, ModelUnavailableError
from app.models.checkpoint import WEIGHT_FILES, load_state_dict

TUNED = "tuned"
PARTIAL = ".partial-"


def default_out(base: Path, role: str, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return base / TUNED / f"{role}-{stamp}"


def check_target(target: Path, source: Path) -> None:
    if target.exists():
        raise InputError(f"--out {target}: already exists; a tuned model goes to a new directory (nothing is "
                         "overwritten): give another --out, or leave it out for a fresh timestamped one")
    if target.resolve() == source.resolve():
        raise InputError(f"--out {target}: is the source model; give another directory")


def staging_dir(target: Path) -> Path:
    return target.parent / f".{target.name}{PARTIAL}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: Path) -> list[Path]:
    """Staging folders under `parent` whose process is gone (killed before it could clean up)."""
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".*{PARTIAL}*"):
        pid = p.name.rsplit(PARTIAL, 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _ignored(directory: str, names: list[str]) -> set[str]:
    # The weights are written anew; the download marker, hidden hub metadata and tuned/ are not the model's.
    return {n for n in names if n in WEIGHT_FILES or n == COMPLETE_MARKER or n.startswith(".") or n == TUNED}


def write_checkpoint(source: Path, staging: Path, trained: dict[str, Any]) -> Path:
    """The source's files with the trained weights, into `staging` (created)."""
    import torch

    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging, ignore=_ignored)
    original = load_state_dict(source)
    unplaced = sorted(set(trained) - set(original))
    if unplaced:
        raise ModelUnavailableError(f"{source}: the trained weights {unplaced[:3]} have no place in the source "
                                    "checkpoint; it is not the checkpoint the model was loaded from")
    state = {k: (trained[k].to(v.dtype) if k in trained else v).contiguous() for k, v in original.items()}
    name = next(n for n in WEIGHT_FILES if (source / n).exists())
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(staging / name), metadata={"format": "pt"})
    else:
        torch.save(state, staging / name)
    return staging


def publish(staging: Path, target: Path) -> Path:
    """Rename the complete staging folder to its final name (atomic on one file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target
