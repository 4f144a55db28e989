"""Items 4 and 7 of the threat model, on disk: what uploads and exports may take, and who may read them.

Exports (the Vectors tab's JSONL / CSV / .npy) and uploads are 0600 files in 0700 folders of the server's
own, and what Gradio serves is that file, not a world-readable copy. Uploads past --max-file-store-mib
remove the oldest files first, the store staying under the cap after every request; one upload larger than
the whole store is refused with 507 and stores nothing.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
from test_file_args import call, file_data, upload

MIB = 2**20


def du(root: Path) -> int:
    """Bytes the store takes on disk, as `du` counts them (every file and folder below the root)."""
    total = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                total += os.lstat(Path(folder) / name).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def assert_private(path: Path, root: Path) -> None:
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600, (path, oct(st.st_mode))
    assert st.st_uid == os.getuid()
    folder = path.parent
    while True:
        fst = folder.stat()
        assert stat.S_IMODE(fst.st_mode) == 0o700, (folder, oct(fst.st_mode))
        assert fst.st_uid == os.getuid()
        if folder == root:
            break
        assert root in folder.parents, (folder, root)
        folder = folder.parent


def test_exports_and_uploads_are_private_to_the_server(server):
    with server.client() as c:
        up = Path(upload(c, "private.txt", "第一行\n第二行\n".encode()))
        root = up.parent.parent
        assert_private(up, root)
        event, data, stream = call(c, "embed", ["一\n二\n三", None, True, False])
        assert event == "complete", stream
        files = {Path(f["path"]).suffix: f for f in data[3:6]}
        assert set(files) == {".jsonl", ".csv", ".npy"}
        for f in files.values():
            served = Path(f["path"])
            # The file Gradio serves is in the store (no second copy elsewhere), and private.
            assert root in served.parents, (served, root)
            assert_private(served, root)
            r = c.get(f["url"] if f["url"].startswith("/") else httpx.URL(f["url"]).path)
            assert r.status_code == 200
            assert r.content == served.read_bytes()
        jsonl = Path(files[".jsonl"]["path"]).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["text"] for line in jsonl] == ["一", "二", "三"]


def test_uploads_past_the_store_cap_remove_the_oldest_first(start_server):
    cap_mib = 2
    s = start_server(("--max-file-store-mib", str(cap_mib), "--max-upload-mib", "1"))
    lines = 30
    paths: list[Path] = []
    with s.client() as c:
        root: Path | None = None
        for i in range(6):
            # ~700 KB of distinct text per file, in lines the embedder takes as they are.
            body = "\n".join(f"{i}-{j} " + "文" * 7800 for j in range(lines)).encode("utf-8")
            paths.append(Path(upload(c, f"part{i}.txt", body)))
            root = paths[-1].parent.parent
            assert du(root) <= cap_mib * MIB, (i, du(root))
        alive = [p.exists() for p in paths]
        assert not alive[0], alive
        assert alive[-1], alive
        first_alive = alive.index(True)
        assert all(alive[first_alive:]), f"not oldest first: {alive}"

        # A new upload still works, and its exports count against the same cap.
        small = upload(c, "small.txt", "一\n二\n三\n".encode())
        event, data, stream = call(c, "embed", ["", file_data(small), True, False])
        assert event == "complete", stream
        assert "**3**" in data[0]
        assert all(root in Path(f["path"]).parents for f in data[3:6])
        assert du(root) <= cap_mib * MIB
        # An upload that was pruned is refused with the rule, not a 500.
        event, data, stream = call(c, "embed", ["", file_data(str(paths[0])), True, False])
        assert event == "error" and "file not accepted" in data["error"], stream


def test_one_upload_larger_than_the_whole_store_gets_507(start_server):
    s = start_server(("--max-file-store-mib", "1", "--max-upload-mib", "2"))
    with s.client() as c:
        root = Path(upload(c, "small.txt", b"small\n")).parent.parent
        before = sorted(p.name for p in root.rglob("*"))
        r = c.post("/gradio_api/upload", files=[("files", ("big.txt", b"x" * (3 * MIB // 2)))])
        assert r.status_code == 507, (r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["type"] == "insufficient_storage_error"
        assert "WENMO_MAX_FILE_STORE_MIB" in err["message"] and "smaller" in err["message"]
        assert sorted(p.name for p in root.rglob("*")) == before


def test_uploads_and_exports_older_than_an_hour_are_refused_then_removed(server):
    """README: uploads and exports are kept an hour at most. An hour is not waited for: the files' modification
    time is moved back, as if they had been written 61 minutes ago (the store ages files by mtime)."""
    with server.client() as c:
        old = Path(upload(c, "old.txt", "一小时前\n".encode()))
        event, data, stream = call(c, "embed", ["", file_data(str(old)), True, False])
        assert event == "complete", stream
        exports = [Path(f["path"]) for f in data[3:6]]
        assert all(p.exists() for p in exports)
        long_ago = old.stat().st_mtime - 61 * 60
        for p in (old, *exports):
            os.utime(p, (long_ago, long_ago))
        # Refused at once, with the rule's message, though the file is still on disk.
        event, data, stream = call(c, "embed", ["", file_data(str(old)), True, False])
        assert event == "error" and "file not accepted" in data["error"], stream
        assert old.exists()
        # The next file stored removes what has expired; a fresh upload is untouched and works.
        fresh = Path(upload(c, "fresh.txt", "刚刚\n".encode()))
        assert not old.exists() and not old.parent.exists()
        assert not any(p.exists() for p in exports)
        event, data, stream = call(c, "embed", ["", file_data(str(fresh)), True, False])
        assert event == "complete", stream
