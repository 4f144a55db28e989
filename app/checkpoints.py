"""Which checkpoint directories a model role may be pointed at while the server runs, and what each one is.

The threat is a logged-in user who names a path: the server must not load (or say anything about) a directory
outside the places the operator made for models. Allowed are the tuned directory (`<model dir>/tuned/…`, where
`wenmo tune` writes; with --demo also `<state dir>/demo-models/tuned/…`) and the checkpoint the role was
started with. A path is resolved first (symlinks followed, `..` folded), then checked, so a link inside the
tuned directory that points out of it is refused like the path it points to; a refusal reads the same whether or
not the path exists. A directory that is allowed must hold a checkpoint of the role (configuration.json's
`task`): an embedder cannot be served as the cross-encoder.

Imports nothing from app/models, torch or the web stack (the service uses it; reading two JSON files is all).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.errors import CheckpointRefusedError, InputError

# configuration.json `task` of each role's ModelScope repository (and of what `wenmo tune` writes from it).
ROLE_TASKS = {
    "embed": ("sentence-embedding",),
    "cross": ("sentence-similarity",),
    "nlu": ("rex-uninlu",),
}
TUNED = "tuned"  # the directory under the model dir that holds tuned checkpoints
ORIGINAL = "original"  # the word that names the checkpoint a role was started with


def tuned_roots(model_dir: str | Path, demo_root: Path | None = None) -> tuple[Path, ...]:
    """The directories tuned checkpoints live under: `<model dir>/tuned`, and with --demo the demo models' too."""
    roots = [Path(model_dir).expanduser() / TUNED]
    if demo_root is not None:
        roots.append(demo_root / TUNED)
    return tuple(roots)


def checkpoint_role(path: Path) -> str | None:
    """The role whose checkpoint `path` holds, by configuration.json's task; None when it does not say."""
    try:
        configuration = json.loads((path / "configuration.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = configuration.get("task") if isinstance(configuration, dict) else None
    return next((role for role, tasks in ROLE_TASKS.items() if task in tasks), None)


def _inside(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


@dataclass(frozen=True)
class CheckpointPolicy:
    """The places a role may be served from: the tuned roots, and each role's original checkpoint."""

    roots: tuple[Path, ...]
    originals: Mapping[str, Path]  # role → the directory it was started with

    def _real_roots(self) -> list[Path]:
        return [Path(os.path.realpath(r)) for r in self.roots]

    def resolve(self, role: str, requested: str) -> Path:
        """The checkpoint directory `requested` names for `role`: "original", a name under a tuned root
        (`embed-20250101-120000`), or an absolute path under one. CheckpointRefusedError (403) outside them,
        InputError (400) for a directory there that is missing or holds another role's checkpoint."""
        if role not in self.originals:
            raise InputError(f"no model role {role!r} is served here; roles: {', '.join(self.originals)}")
        if not isinstance(requested, str) or not requested.strip() or "\x00" in requested:
            raise InputError("checkpoint must be a non-empty path or name: \"original\", a tuned checkpoint's name "
                             "(GET /v1/models lists them), or its path under the tuned directory")
        original = Path(os.path.realpath(self.originals[role]))
        if requested.strip() == ORIGINAL:
            return original
        given = Path(requested.strip()).expanduser()
        if given.is_absolute():
            candidate = given
        else:  # a name: under the first tuned root that has it
            candidate = next((r / given for r in self.roots if os.path.lexists(r / given)), self.roots[0] / given)
        real = Path(os.path.realpath(candidate))
        if real == original:
            return original
        if any(_inside(real, root) for root in self._real_roots()):
            return self._check(role, real, requested)
        raise CheckpointRefusedError(
            f"checkpoint {requested[:200]!r} is not served: only checkpoints under the tuned directory "
            f"({', '.join(str(r) for r in self.roots)}) or the role's original ({ORIGINAL!r}) can be; "
            "`wenmo tune` writes there"
        )

    def _check(self, role: str, path: Path, requested: str) -> Path:
        if not path.is_dir():
            raise InputError(f"checkpoint {requested[:200]!r}: no such directory under the tuned directory; "
                             "GET /v1/models lists the tuned checkpoints")
        found = checkpoint_role(path)
        if found != role:
            what = f"a {found} checkpoint" if found else "not a checkpoint Wenmo can tell the role of"
            raise InputError(f"checkpoint {requested[:200]!r} is {what} (configuration.json task); the {role} "
                             f"role serves {' or '.join(ROLE_TASKS[role])} checkpoints only")
        return path

    def tuned(self, role: str) -> list[Path]:
        """The tuned checkpoints of `role`, newest first (by directory time)."""
        found: list[Path] = []
        for root in self._real_roots():
            if root.is_dir():
                found += [p for p in _subdirs(root) if checkpoint_role(p) == role]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def _subdirs(root: Path) -> Iterable[Path]:
    for entry in root.iterdir():
        # A temporary directory of a job still writing (`.…`) is not a checkpoint yet.
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        real = Path(os.path.realpath(entry))
        if _inside(real, root):  # a link out of the tuned directory is not listed
            yield real
