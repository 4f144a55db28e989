"""Item 2 of the threat model: a logged-in user may run the models, not read the server's files.

Every UI function that takes a file (`embed`, `similarity`) gets, through the raw Gradio API, a FileData
naming: a 0600 file outside the upload folder, a missing path, a symlink inside the upload folder pointing
out, and a `..` path out of it. Each answer is an error event stating the rule (one message for all, so it
tells nobody which files exist); the secret appears in no answer, and Gradio made no copy of it. A real
upload still works end to end, with the same vectors as the HTTP API gives for the file's lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

SECRET = "机密 TOP-SECRET-7f3a9c line that must never leave the server"
RULE_MARKERS = ("file not accepted", "/gradio_api/upload", "WENMO_MAX_FILE_STORE_MIB")
FILE_FUNCTIONS = {
    # api name → the event's inputs, with the file argument as {}
    "embed": lambda f: ["", f, True, True],
    "similarity": lambda f: ["今天天气很好", "", f, False, True],
}


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def call(client: httpx.Client, name: str, data: list) -> tuple[str, object, str]:
    """(final event, its data, the whole stream) of one /gradio_api/call/<name>."""
    r = client.post(f"/gradio_api/call/{name}", json={"data": data})
    assert r.status_code == 200, r.text
    event_id = r.json()["event_id"]
    stream = client.get(f"/gradio_api/call/{name}/{event_id}").text
    events = [block for block in stream.split("\n\n") if block.startswith("event: ")]
    final = [b for b in events if b.split("\n", 1)[0] in ("event: complete", "event: error")]
    assert final, stream
    head, _, body = final[-1].partition("\n")
    return head.removeprefix("event: "), json.loads(body.removeprefix("data: ")), stream


def upload(client: httpx.Client, name: str, data: bytes) -> str:
    r = client.post("/gradio_api/upload", files=[("files", (name, data))])
    assert r.status_code == 200, r.text
    return r.json()[0]


@pytest.fixture(scope="module")
def upload_root(server) -> Path:
    """The server's upload folder, as a real upload names it (<folder>/<sha256>/<name>)."""
    with server.client() as c:
        return Path(upload(c, "probe.txt", b"probe\n")).parent.parent


@pytest.fixture()
def secret_file(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(f"{SECRET}\nsecond line\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def assert_refused(event: str, data: object, stream: str) -> str:
    assert event == "error", stream
    assert isinstance(data, dict) and isinstance(data.get("error"), str), stream
    message = data["error"]
    for marker in RULE_MARKERS:
        assert marker in message, message
    assert SECRET not in stream and "TOP-SECRET" not in stream
    return message


def copies_of_secret(root: Path) -> list[Path]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                if not path.is_symlink() and "TOP-SECRET" in path.read_text(encoding="utf-8", errors="replace"):
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.mark.parametrize("name", sorted(FILE_FUNCTIONS))
def test_a_file_outside_the_upload_folder_and_a_missing_one_get_the_same_refusal(server, upload_root,
                                                                                 secret_file, name):
    with server.client() as c:
        outside = assert_refused(*call(c, name, FILE_FUNCTIONS[name](file_data(str(secret_file)))))
        missing = assert_refused(*call(c, name, FILE_FUNCTIONS[name](file_data(str(secret_file) + ".gone"))))
        # Without the FileData marker too (Gradio's own traversal only looks at marked objects).
        bare = assert_refused(*call(c, name, FILE_FUNCTIONS[name]({"path": str(secret_file)})))
    assert outside == missing == bare
    assert copies_of_secret(upload_root) == []


@pytest.mark.parametrize("name", sorted(FILE_FUNCTIONS))
def test_a_symlink_inside_the_upload_folder_pointing_out_is_refused(server, upload_root, secret_file, name):
    folder = upload_root / ("ab" * 32)  # the shape of an upload's folder: its sha256
    folder.mkdir(exist_ok=True)
    link = folder / f"link-{name}.txt"
    link.symlink_to(secret_file)
    try:
        with server.client() as c:
            assert_refused(*call(c, name, FILE_FUNCTIONS[name](file_data(str(link)))))
        assert copies_of_secret(upload_root) == []
    finally:
        link.unlink()


@pytest.mark.parametrize("name", sorted(FILE_FUNCTIONS))
def test_a_dotdot_path_out_of_the_upload_folder_is_refused(server, upload_root, secret_file, name):
    with server.client() as c:
        real = Path(upload(c, f"real-{name}.txt", b"one\ntwo\n"))
        ups = "/".join([".."] * len(real.parent.parts))
        sneaky = f"{real.parent}/{ups}{secret_file}"
        assert os.path.realpath(sneaky) == str(secret_file.resolve())
        assert_refused(*call(c, name, FILE_FUNCTIONS[name](file_data(sneaky))))
    assert copies_of_secret(upload_root) == []


def test_the_file_route_serves_nothing_outside_the_store(server, upload_root, secret_file):
    state_secret = server.state_dir / "operator-secret.txt"
    state_secret.write_text(f"{SECRET}\n", encoding="utf-8")
    state_secret.chmod(0o600)
    try:
        with server.client() as c:
            call(c, "embed", ["", file_data(str(secret_file)), True, True])  # the attack that used to copy it
            targets = [str(secret_file), str(state_secret), "/etc/hostname",
                       *map(str, copies_of_secret(upload_root))]
            hostname = Path("/etc/hostname").read_text() if Path("/etc/hostname").exists() else None
            for target in targets:
                r = c.get(f"/gradio_api/file={target}")
                assert r.status_code in (403, 404), (target, r.status_code)
                assert "TOP-SECRET" not in r.text
                if hostname:
                    assert r.text != hostname
        assert copies_of_secret(upload_root) == []
    finally:
        state_secret.unlink()


def test_a_real_upload_still_works_for_every_file_function(server):
    lines = ["今天天气很好", "我喜欢看电影", "向量化 test line"]
    with server.client() as c:
        path = upload(c, "texts.txt", ("\n".join(lines) + "\n").encode("utf-8"))
        event, data, stream = call(c, "embed", ["", file_data(path), True, False])
        assert event == "complete", stream
        vectors = np.array([row["vector"] for row in json.loads(data[2])], dtype=np.float32)
        api = c.post("/v1/embeddings", json={"input": lines})
        assert api.status_code == 200, api.text
        expected = np.array([d["embedding"] for d in api.json()["data"]], dtype=np.float32)
        assert vectors.shape == expected.shape == (3, expected.shape[1])
        np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)
        assert "**3**" in data[0] and "texts.txt" in data[0]

        event, data, stream = call(c, "similarity", ["今天天气很好", "", file_data(path), False, False])
        assert event == "complete", stream
        ranked = data[1]["data"]
        assert sorted(row[1] for row in ranked) == sorted(lines)


@pytest.mark.parametrize("path", ["/gradio_api/file=https://example.com/x.txt", "/gradio_api/file=http://127.0.0.1:1/",
                                  "/gradio_api/file=HTTPS://example.com/", "/gradio_api/proxy=https://example.com/"])
def test_gradio_does_not_fetch_urls_for_clients(server, path):
    # Before: Gradio fetched public URLs on the client's behalf (an open relay for any logged-in user).
    with server.client() as c:
        r = c.get(path)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    assert "does not fetch URLs" in r.json()["error"]["message"]
