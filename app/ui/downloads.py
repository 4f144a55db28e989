"""A private temporary directory for files the UI offers for download, pruned by age.

Gradio copies a returned file into its own cache before serving it (and the Blocks prune that cache),
so ours only has to live until the handler returns; an hour is generous and keeps the disk bounded.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

MAX_AGE_S = 3600.0


class DownloadDir:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="wenmo-downloads-"))
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        """A fresh directory for one request's files; older ones are removed on the way."""
        self.prune()
        path = self.root / uuid.uuid4().hex
        path.mkdir()
        return path

    def prune(self, max_age_s: float = MAX_AGE_S) -> None:
        cutoff = time.time() - max_age_s
        for child in self.root.iterdir():
            try:
                if child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)
            except FileNotFoundError:
                continue

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
