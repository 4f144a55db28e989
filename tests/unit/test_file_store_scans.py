"""The file store's scans for expired files (app/web/ui/filestore.py): not one per stored file, but every
EXPIRY_SCAN_S, or at once after a file was refused for its age; what a prune removes is reported, and Gradio
forgets it (app/web/ui/blocks.py `forget_files`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.errors import FileRejectedError
from app.web.ui import filestore
from app.web.ui.filestore import FileStore

MIB = 2**20


def an_upload(store: FileStore, name: str, age_s: float = 0.0) -> Path:
    folder = store.root / (name * 64)[:64]
    folder.mkdir()
    path = folder / "a.txt"
    path.write_text("北京\n", encoding="utf-8")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def export(store: FileStore) -> Path:
    with store.export_dir(4096) as folder:
        (folder / "vectors.json").write_text("[]", encoding="utf-8")
    return folder


def test_a_stream_of_exports_scans_the_store_once_per_interval():
    store = FileStore(64 * MIB)
    try:
        for _ in range(50):
            export(store)
        assert store.scans == 1  # was one scan (a stat of every file in the store) per export
        assert len(list(store.root.iterdir())) == 50
    finally:
        store.remove()


def test_the_next_interval_scans_again(monkeypatch):
    store = FileStore(64 * MIB)
    try:
        export(store)
        monkeypatch.setattr(filestore.time, "monotonic", lambda: time.monotonic_ns() / 1e9 + filestore.EXPIRY_SCAN_S)
        export(store)
        assert store.scans == 2
    finally:
        store.remove()


def test_a_file_refused_for_its_age_is_removed_at_the_next_reservation():
    store = FileStore(64 * MIB)
    try:
        export(store)  # the interval's scan: nothing expired yet
        old = an_upload(store, "a", age_s=filestore.MAX_AGE_S + 60)
        with pytest.raises(FileRejectedError):
            store.upload_path(str(old))
        assert old.exists()
        told: list[list[str]] = []
        store.on_removed.append(told.append)
        export(store)
        assert store.scans == 2 and not old.exists() and not old.parent.exists()
        assert told == [[str(old)]] and store.pruned_files == 1
    finally:
        store.remove()


def test_a_fresh_upload_is_not_refused_and_does_not_force_a_scan():
    store = FileStore(64 * MIB)
    try:
        export(store)
        fresh = an_upload(store, "b")
        assert store.upload_path(str(fresh)) == fresh
        export(store)
        assert store.scans == 1 and fresh.exists()
    finally:
        store.remove()


def test_gradio_forgets_the_files_the_store_removed():
    import gradio as gr

    from app.web.ui.blocks import forget_files

    with gr.Blocks() as blocks:
        gr.Markdown("x")
    recorded = blocks.temp_file_sets[0]
    recorded.update({"/s/a", "/s/b", "/s/c"})
    extra: set[str] = {"/s/b", "/s/d"}
    blocks.temp_file_sets.append(extra)
    forget_files(blocks, ["/s/a", "/s/b", "/s/x"])
    assert recorded == {"/s/c"} and extra == {"/s/d"}


def test_the_age_limit_is_the_stores_own_setting():
    store = FileStore(64 * MIB, max_age_s=120)  # --max-file-store-age-s 120
    try:
        young, old = an_upload(store, "a", age_s=60), an_upload(store, "b", age_s=150)
        assert store.upload_path(str(young)) == young
        with pytest.raises(FileRejectedError):
            store.upload_path(str(old))
    finally:
        store.remove()
