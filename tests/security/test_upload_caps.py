"""One upload request is bounded as a whole (README "Security": limits): at most --max-upload-mib for the whole
body, all files together (the shared server: 1 MiB), and at most --max-upload-files files (default 10). Past
either limit the answer is 413 in our shape, and nothing of the request stays on disk — also when the body
arrives chunked (no Content-Length) and Gradio had begun writing files before the limit was passed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

MIB = 2**20


def upload(server, files: list[tuple[str, bytes]], *, chunk: int | None = None) -> httpx.Response:
    """POST /gradio_api/upload; `chunk`: send the body in pieces of this size, without a Content-Length."""
    with server.client(timeout_s=60) as c:
        request = c.build_request("POST", "/gradio_api/upload",
                                  files=[("files", (name, data, "text/plain")) for name, data in files])
        if chunk is None:
            return c.send(request)
        body = request.read()

        def pieces():
            for i in range(0, len(body), chunk):
                yield body[i:i + chunk]
                time.sleep(0.002)  # separate receive() calls on the server: Gradio writes between them

        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        return c.post("/gradio_api/upload", content=pieces(), headers=headers)


def stored(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def assert_nothing_stored(root: Path, before: dict[str, int]) -> None:
    """The refused upload leaves nothing behind: parts written before the refusal are removed (polled: the
    removal may finish just after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            now = stored(root)
        except FileNotFoundError:  # a part removed between listing and stat: look again
            continue
        if now == before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert now == before


@pytest.fixture(scope="module")
def upload_root(server) -> Path:
    """The server's upload folder, learnt from the path of an upload it accepted."""
    r = upload(server, [("probe.txt", b"probe\n")])
    assert r.status_code == 200, r.text
    return Path(r.json()[0]).parent.parent


def refused(r: httpx.Response, *needles: str) -> None:
    assert r.status_code == 413, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == "invalid_request_error", body
    for needle in needles:
        assert needle in body["error"]["message"], (needle, body)


@pytest.mark.parametrize("chunk", [None, 64 * 1024], ids=["content-length", "chunked"])
def test_two_files_over_the_cap_together_are_413_and_nothing_is_stored(server, upload_root, chunk):
    before = stored(upload_root)
    part = b"x" * int(0.6 * MIB)  # each under the 1 MiB cap, together over it
    r = upload(server, [("a.txt", part), ("b.txt", part[:-1] + b"y")], chunk=chunk)
    refused(r, "1 MiB", "all files of one upload together", "--max-upload-mib / WENMO_MAX_UPLOAD_MIB")
    assert_nothing_stored(upload_root, before)


@pytest.mark.parametrize("chunk", [None, 1024], ids=["content-length", "chunked"])
def test_eleven_files_are_413_and_nothing_is_stored(server, upload_root, chunk):
    before = stored(upload_root)
    # 11 × ~6 KiB: in 1 KiB pieces Gradio has written the first files before the 11th part arrives.
    files = [(f"f{i}.txt", f"第 {i} 个文件\n".encode() * 400) for i in range(11)]
    r = upload(server, files, chunk=chunk)
    refused(r, "more than 10 files", "--max-upload-files / WENMO_MAX_UPLOAD_FILES")
    assert_nothing_stored(upload_root, before)


def test_ten_files_are_accepted(server, upload_root):
    r = upload(server, [(f"ok{i}.txt", f"文本 {i}\n".encode()) for i in range(10)])
    assert r.status_code == 200, r.text
    paths = r.json()
    assert len(paths) == 10 and all(os.path.isfile(p) for p in paths)


def test_one_file_under_the_cap_is_stored_and_usable(server, upload_root):
    lines = [f"第 {i} 行 " + "北京上海" * 2000 for i in range(32)]  # 32 lines, ~0.75 MiB of UTF-8
    data = ("\n".join(lines) + "\n").encode()
    assert 0.5 * MIB < len(data) < MIB
    r = upload(server, [("half.txt", data)])
    assert r.status_code == 200, r.text
    (path,) = r.json()
    assert Path(path).read_bytes() == data and Path(path).parent.parent == upload_root
    with server.client(timeout_s=120) as c:
        event = c.post("/gradio_api/call/embed", json={"data": [
            "", {"path": path, "meta": {"_type": "gradio.FileData"}}, True, False]}).json()["event_id"]
        result = c.get(f"/gradio_api/call/embed/{event}")
    assert result.text.startswith("event: complete"), result.text[:500]
    summary = json.loads(result.text.split("data: ", 1)[1])[0]
    assert "**32**" in summary
