"""README promises about the running server that no other test held it to, each against a real
`python -m app serve` process:

- a failed inference answers 500 `{"error": …}` whose message names the log entry (`event=server_error id=…`,
  with the traceback), and the server goes on serving (README "Limits and busy", error table);
- SIGTERM while work outlasts `--drain-s`: the process exits 0 at the drain deadline, the work cut off
  (README "Limits and busy", last paragraph);
- `--no-auth` is allowed on `::1` and `localhost` (and refused off loopback with exit 2) (README "Logging in");
- with neither WENMO_AUTH nor WENMO_AUTH_FILE, systemd's credential `$CREDENTIALS_DIRECTORY/wenmo-auth` is the
  user list, and the log names it as `systemd credential …` (README "Logging in", the credentials table);
- the Vectors tab's copy-JSON holds all vectors up to 8 MB, and is left empty with a note beyond (the downloads
  still hold everything) (README "The UI").

The failed inference is a real one: an embedding checkpoint whose vocab.txt has one token more than its
embedding table (a tokenizer from another revision of the model, a mistake that happens). It loads, every text
without that token works, and a text with it fails inside the forward pass (IndexError in the embedding lookup).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_harness import PASSWORD, REPO_ROOT, USER, WenmoServer, basic_header, clean_env, free_port

# A character the demo vocabulary lacks (it reads as [UNK] there); appended to vocab.txt it gets an id one past
# the embedding table.
EXTRA_TOKEN = "鑫"
COPY_MAX_CHARS = 8_000_000  # README "The UI": the copy button holds all vectors as JSON "up to 8 MB"


def demo_dir(server: WenmoServer, name: str) -> Path:
    path = server.state_dir / "demo-models" / name
    assert (path / "config.json").is_file(), f"the shared server has no demo model {name}"
    return path


# ---- a failed inference ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mismatched(server, tmp_path_factory):
    """Served from model directories (no --demo): the cross-encoder and NLU demo models as they are, and the
    demo GTE with a vocab.txt one token longer than its embedding table."""
    root = tmp_path_factory.mktemp("mismatched")
    gte = root / "gte"
    shutil.copytree(demo_dir(server, "gte"), gte)
    vocab = (gte / "vocab.txt").read_text(encoding="utf-8").splitlines()
    rows = json.loads((gte / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    assert EXTRA_TOKEN not in vocab and len(vocab) == rows
    (gte / "vocab.txt").write_text("\n".join([*vocab, EXTRA_TOKEN]) + "\n", encoding="utf-8")
    s = WenmoServer(root / "state", ["--embed-model", str(gte), "--cross-model", str(demo_dir(server, "structbert")),
                                     "--nlu-model", str(demo_dir(server, "rex-uninlu"))], demo=False)
    try:
        yield s.wait_ready()
    finally:
        s.close()


def test_a_failed_inference_is_a_500_naming_its_log_entry_and_the_server_keeps_serving(mismatched):
    with mismatched.client() as c:
        failed = c.post("/v1/embeddings", json={"input": ["今天天气很好", f"今天{EXTRA_TOKEN}"]})
        assert failed.status_code == 500, failed.text
        assert failed.headers["content-type"] == "application/json"
        error = failed.json()["error"]
        assert error["type"] == "internal_error", error
        assert "Traceback" not in failed.text and "IndexError" not in failed.text  # the detail stays in the log
        request_id = re.search(r"\bid ([0-9a-f]+)\b", error["message"]).group(1)
        # The same request fails the same way each time, and each failure gets an entry of its own.
        again = c.post("/v1/embeddings", json={"input": [EXTRA_TOKEN]})
        assert again.status_code == 500 and again.json()["error"]["type"] == "internal_error"
        assert request_id not in again.json()["error"]["message"]

        # Still serving: texts the model can read, on every route that uses it, and the probes.
        ok = c.post("/v1/embeddings", json={"input": ["今天天气很好", "明天"]})
        assert ok.status_code == 200, ok.text
        assert [d["index"] for d in ok.json()["data"]] == [0, 1]
        assert all(math.isfinite(x) for x in ok.json()["data"][0]["embedding"])
        sim = c.post("/v1/similarity", json={"source": "今天天气很好", "candidates": ["今天天气不错"]})
        assert sim.status_code == 200, sim.text
        assert httpx.get(mismatched.url + "/readyz").json() == {"status": "ready"}
        metrics = c.get("/metrics").text
        assert "wenmo_in_flight 0" in metrics  # the failed requests gave their slots back
    assert mismatched.proc.poll() is None

    # The log entry the answer named: one line with the id, then the traceback of the real failure.
    logs = mismatched.logs()
    line = next((x for x in logs.splitlines() if f"event=server_error id={request_id} " in x), None)
    assert line is not None, logs[-3000:]
    assert "status=500 type=internal_error" in line and "path='/v1/embeddings'" in line
    after = logs[logs.index(line):]
    assert "Traceback (most recent call last)" in after and "IndexError: index out of range" in after


# ---- SIGTERM while work outlasts the drain --------------------------------------------------------------
# ~10 s of work on the tiny model at 2 CPU cores (max length: 140 characters each, 10,000 texts), against a
# drain of 1 s; the test waits for events (the request running, the process exiting), never for a duration.
LONG_WORK = ["北京天安门上海" * 20 + str(i) for i in range(10000)]


@pytest.fixture(scope="module")
def cut_off(server, tmp_path_factory):
    """One long request in flight on a server with --drain-s 1, then SIGTERM; what the process and the client
    saw. The test waits for events (the request running, the process exiting), never for a duration."""
    s = WenmoServer(tmp_path_factory.mktemp("drain") / "state", ["--drain-s", "1", "--max-concurrent", "1"],
                    template=server.state_dir)
    outcome: dict[str, object] = {}

    def long_request() -> None:
        try:
            with s.client(timeout_s=300) as c:
                outcome["response"] = c.post("/v1/embeddings", json={"input": LONG_WORK})
        except httpx.HTTPError as e:  # the server went away mid-request
            outcome["error"] = e

    try:
        s.wait_ready()
        worker = threading.Thread(target=long_request, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        with s.client(timeout_s=10) as c:
            while "wenmo_in_flight 1" not in c.get("/metrics").text:
                assert time.monotonic() < deadline, "the long request never started"
                assert worker.is_alive(), outcome
                time.sleep(0.05)
        s.signal(signal.SIGTERM)
        outcome["exit_code"] = s.wait_exit(timeout_s=120)
        worker.join(timeout=60)
        assert not worker.is_alive(), "the client is still waiting after the process exited"
        outcome["logs"] = s.logs()
        yield outcome
    finally:
        s.close()


def test_sigterm_exits_0_at_the_drain_deadline_while_work_still_runs(cut_off):
    logs = cut_off["logs"]
    assert cut_off["exit_code"] == 0, logs[-3000:]
    # The work did not finish: the drain gave up on it, the process ended under it, and no result came back.
    assert re.search(r"event=drain_started in_flight=[1-9]", logs), logs[-3000:]
    assert re.search(r"event=drain_timeout still_running=[1-9]\d* after_s=1\b", logs), logs[-3000:]
    assert re.search(r"event=stopped still_running=[1-9]", logs), logs[-3000:]
    assert "event=drained" not in logs
    response = cut_off.get("response")
    assert response is None or response.status_code != 200, "the work finished before the process exited"


def test_work_cut_off_by_the_drain_deadline_gets_no_answer_outside_the_one_error_shape(cut_off):
    """README "Bad input and errors": every error answer, an exception nobody caught included, is
    `{"error": {"message", "type"}}`, and a server error is logged as one `event=server_error id=…` line."""
    response = cut_off.get("response")
    if response is not None:
        assert response.headers["content-type"].startswith("application/json"), (response.status_code,
                                                                                 response.text[:300])
        error = response.json()["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str)
    assert "Exception in ASGI application" not in cut_off["logs"]


# ---- --no-auth on loopback ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_servers(server, tmp_path_factory):
    """--no-auth on ::1 and on localhost, started together (most of a start is importing)."""
    root = tmp_path_factory.mktemp("no-auth")
    v6 = WenmoServer(root / "v6", ["--no-auth"], auth=None, host="::1", template=server.state_dir)
    v6.url = f"http://[::1]:{v6.port}"
    named = WenmoServer(root / "localhost", ["--no-auth"], auth=None, host="localhost", template=server.state_dir)
    try:
        yield {"::1": v6.wait_ready(), "localhost": named.wait_ready()}
    finally:
        v6.close()
        named.close()


@pytest.mark.parametrize("host", ["::1", "localhost"])
def test_no_auth_is_allowed_on_a_loopback_host(open_servers, host):
    s = open_servers[host]
    r = httpx.post(s.url + "/v1/embeddings", json={"input": ["不需要密码"]}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) == 32
    assert httpx.get(s.url + "/", timeout=30).status_code == 200
    logs = s.logs()
    assert f"event=auth_disabled host={host} " in logs
    assert not (s.state_dir / "auth.txt").exists()  # no password was generated: none is asked for
    if host == "::1":
        # Bound to IPv6 loopback only: the IPv4 loopback does not reach it.
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", s.port)) != 0


@pytest.mark.parametrize("host", ["::", "192.0.2.10"])
def test_no_auth_is_refused_off_loopback_with_exit_2(tmp_path, host):
    out = subprocess.run([sys.executable, "-m", "app", "serve", "--no-auth", "--host", host, "--port", "1",
                          "--state-dir", str(tmp_path)], cwd=REPO_ROOT, env=clean_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"--no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost), not --host {host}" \
        in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "auth.txt").exists()


def test_a_pod_without_credentials_refuses_to_generate_a_password(tmp_path):
    """In Kubernetes every replica would generate a password of its own: the server asks for the Secret instead."""
    out = subprocess.run([sys.executable, "-m", "app", "serve", "--demo", "--host", "127.0.0.1", "--port",
                          str(free_port()), "--state-dir", str(tmp_path)], cwd=REPO_ROOT,
                         env=clean_env({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "each replica would generate a password of its own: mount the Secret as a file and set WENMO_AUTH_FILE" \
        in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "auth.txt").exists()


# ---- the systemd credential -----------------------------------------------------------------------------
def test_the_systemd_credential_is_the_user_list_when_nothing_else_is_given(server, tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "wenmo-auth").write_text("# written by systemd's LoadCredential=\ncarol:from-systemd\n",
                                      encoding="utf-8")
    s = WenmoServer(tmp_path / "state", auth=None, env={"CREDENTIALS_DIRECTORY": str(creds)},
                    template=server.state_dir)
    try:
        s.wait_ready()
        assert httpx.get(s.url + "/metrics", auth=("carol", "from-systemd")).status_code == 200
        assert httpx.get(s.url + "/metrics", auth=("carol", "wrong")).status_code == 401
        assert httpx.get(s.url + "/metrics").status_code == 401
        logs = s.logs()
        assert f"from='systemd credential {creds / 'wenmo-auth'}'" in logs
        assert "from-systemd" not in logs  # the source, never the secret
        assert not (s.state_dir / "auth.txt").exists()  # nothing generated
    finally:
        s.close()


def test_wenmo_auth_wins_over_the_systemd_credential(server, tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "wenmo-auth").write_text("carol:from-systemd\n", encoding="utf-8")
    s = WenmoServer(tmp_path / "state", env={"CREDENTIALS_DIRECTORY": str(creds)}, template=server.state_dir)
    try:
        s.wait_ready()
        assert httpx.get(s.url + "/metrics", auth=(USER, PASSWORD)).status_code == 200
        assert httpx.get(s.url + "/metrics", auth=("carol", "from-systemd")).status_code == 401
        assert "systemd credential" not in s.logs()
    finally:
        s.close()


# ---- the Vectors tab's copy-JSON cap --------------------------------------------------------------------
def copy_json(vectors: np.ndarray) -> str:
    """The copy-JSON README "The UI" describes, `[{"vector": [...], "dimension": D}, …]` with float32's
    9 significant digits, built here from the .npy download (the size the cap is about)."""
    rows = ['{"vector": [' + ", ".join(f"{x:.9g}" for x in v.tolist()) + f'], "dimension": {v.shape[0]}}}'
            for v in vectors]
    return "[\n" + ",\n".join(rows) + "\n]"


@pytest.fixture(scope="module")
def big_batches(server, tmp_path_factory):
    """--max-texts high enough for a copy-JSON past 8 MB (the demo model's vectors have 32 dimensions)."""
    s = WenmoServer(tmp_path_factory.mktemp("big") / "state", ["--max-texts", "40000"], template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


def embed_in_ui(s: WenmoServer, texts: list[str]):
    from gradio_client import Client

    ui = Client(s.url + "/", headers=basic_header(USER, PASSWORD), verbose=False, analytics_enabled=False)
    summary, _preview, as_json, jsonl, _csv, npy = ui.predict("\n".join(texts), None, True, False,
                                                              api_name="/embed")
    return summary, as_json, jsonl, np.load(npy)


def test_copy_json_holds_all_vectors_up_to_8_mb_and_nothing_beyond(big_batches):
    # Size the two batches from a small one: ~85 % and ~115 % of the cap.
    _s, probe_json, _j, probe = embed_in_ui(big_batches, [f"文本{i}" for i in range(200)])
    assert probe_json == copy_json(probe)
    per_text = len(probe_json) / len(probe)

    under = [f"文本{i}" for i in range(int(0.85 * COPY_MAX_CHARS / per_text))]
    summary, as_json, _jsonl, vectors = embed_in_ui(big_batches, under)
    assert len(copy_json(vectors)) <= COPY_MAX_CHARS
    assert as_json == copy_json(vectors)
    parsed = json.loads(as_json)
    assert len(parsed) == len(under) and {row["dimension"] for row in parsed} == {32}
    assert np.array_equal(np.array([row["vector"] for row in parsed], dtype=np.float32), vectors)
    assert "too large to copy" not in summary

    over = [f"文本{i}" for i in range(int(1.15 * COPY_MAX_CHARS / per_text))]
    summary, as_json, jsonl, vectors = embed_in_ui(big_batches, over)
    assert len(copy_json(vectors)) > COPY_MAX_CHARS
    assert as_json == ""
    assert "JSON 太大无法复制，请下载 (too large to copy: use the JSONL download)" in summary
    # The downloads have no such limit: every vector is there.
    assert vectors.shape == (len(over), 32)
    assert sum(1 for _ in open(jsonl, encoding="utf-8")) == len(over)
