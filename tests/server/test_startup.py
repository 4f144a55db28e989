"""Start-up decisions: --no-auth only on loopback, a model that cannot load stops the start with a message
(exit 2, no traceback), a busy port is a message, and the loading phase answers 503 until ready."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import time

import httpx
import pytest
from server_harness import REPO_ROOT, WenmoServer, clean_env

from app.composition import DEMO_LOCK


def run_serve(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 120):
    return subprocess.run([sys.executable, "-m", "app", "serve", *args], cwd=REPO_ROOT, env=clean_env(env),
                          capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two servers started at once (they spend most of their start importing): one with --no-auth whose
    demo models are built while it serves, one with a broken model. The test holds the no-auth server's
    demo-model lock, as another process building them would: the server stays in its loading phase until the
    test lets go (how long the building takes does not matter)."""
    root = tmp_path_factory.mktemp("startup")
    (root / "empty-model").mkdir()
    (root / "noauth").mkdir()
    lock = open(root / "noauth" / DEMO_LOCK, "a")  # noqa: SIM115 (released by the test, closed here)
    fcntl.flock(lock, fcntl.LOCK_EX)
    open_server = WenmoServer(root / "noauth", ["--no-auth"], auth=None)
    broken = WenmoServer(root / "broken", ["--embed-model", str(root / "empty-model")], demo=False)
    try:
        yield open_server, broken, lock
    finally:
        lock.close()
        open_server.close()
        broken.close()


def test_no_auth_is_refused_off_loopback(tmp_path):
    out = run_serve(["--no-auth", "--host", "0.0.0.0", "--port", "1", "--state-dir", str(tmp_path)], timeout_s=60)
    assert out.returncode == 2
    assert "--no-auth is allowed only on a loopback address" in out.stderr
    assert "WENMO_AUTH" in out.stderr and "Traceback" not in out.stderr


def test_loading_phase_then_no_auth_on_loopback(pair):
    server, _, lock = pair
    demo = server.state_dir / "demo-models"
    deadline = time.monotonic() + 90
    while True:
        assert time.monotonic() < deadline, server.logs()[-2000:]
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    # It waits for the other builder (the test) and builds nothing meanwhile: no half-written checkpoints
    # under the name where the other builder's appear.
    while "event=demo_models_wait" not in server.logs() and not demo.exists():
        assert time.monotonic() < deadline, server.logs()[-2000:]
        time.sleep(0.1)
    assert not demo.exists() and "event=demo_models_wait" in server.logs()
    # Listening, demo models not there yet: alive but not ready, and the UI says so.
    ready = httpx.get(server.url + "/readyz")
    assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
    page = httpx.get(server.url + "/", headers={"Accept": "text/html"})
    assert page.status_code == 503 and "loading models" in page.text and page.headers["retry-after"] == "5"
    api = httpx.post(server.url + "/v1/embeddings", json={"input": "x"})
    assert api.status_code == 503 and "loading models" in api.json()["error"]["message"]
    fcntl.flock(lock, fcntl.LOCK_UN)  # the other builder gave up without building: the server builds them
    server.wait_ready()
    assert (demo / ".complete").exists() and "event=demo_models_built" in server.logs()
    assert not list(server.state_dir.glob(".demo-models-*"))  # the temporary build folder was renamed
    # No credentials needed anywhere.
    assert httpx.get(server.url + "/").status_code == 200
    r = httpx.post(server.url + "/v1/embeddings", json={"input": "不需要密码"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 32
    assert "event=auth_disabled" in server.logs()
    assert not (server.state_dir / "auth.txt").exists()


def test_a_model_that_cannot_load_stops_the_start_with_its_message(pair):
    _, broken, _ = pair
    code = broken.wait_exit(timeout_s=120)
    logs = broken.logs()
    assert code == 2, logs[-2000:]
    assert "error: " in logs and "config.json" in logs and "empty-model" in logs
    assert "Traceback" not in logs


def test_a_busy_port_is_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run_serve(["--port", str(port), "--state-dir", str(tmp_path), "--demo"], env={"WENMO_AUTH": "a:b"})
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "choose another --port" in out.stderr
    assert "Traceback" not in out.stderr


def test_listening_socket_is_tcp_so_replies_are_not_delayed_by_nagle():
    """Regression: a socket made with proto 0 made asyncio skip TCP_NODELAY, adding ~40 ms per keep-alive reply."""
    import socket

    from app.web.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
