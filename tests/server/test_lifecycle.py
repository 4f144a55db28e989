"""A server of its own, started without WENMO_AUTH: the generated password and the per-address lockout; and
the SIGTERM drain, on one more server (the drain ends it, and the tests run in any order)."""

from __future__ import annotations

import base64
import signal
import stat
import threading
import time

import httpx
import pytest
from server_harness import WenmoServer, basic_header

HEAVY = ["北京天安门上海" * 20 + str(i) for i in range(2000)]  # ~2 s on the tiny model, 2 CPU cores


@pytest.fixture(scope="module")
def own(server, tmp_path_factory):
    s = WenmoServer(tmp_path_factory.mktemp("own") / "state", ["--drain-s", "20"], auth=None,
                    template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


@pytest.fixture()
def draining(server, tmp_path):
    """A server for the drain test alone: SIGTERM ends it."""
    s = WenmoServer(tmp_path / "state", ["--drain-s", "20"], auth=None, template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


def generated(own) -> tuple[str, str]:
    lines = [line for line in (own.state_dir / "auth.txt").read_text().splitlines() if not line.startswith("#")]
    user, _, password = lines[0].partition(":")
    return user, password


def test_generated_password_file_is_private_and_never_logged(own):
    path = own.state_dir / "auth.txt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    user, password = generated(own)
    assert user == "wenmo" and len(password) >= 20
    logs = own.logs()
    assert str(path) in logs  # the log says where it is …
    assert password not in logs  # … never what it is


def test_generated_password_opens_the_app(own):
    assert httpx.get(own.url + "/", auth=generated(own)).status_code == 200
    assert httpx.get(own.url + "/", auth=("wenmo", "guess")).status_code == 401


def test_repeated_failures_get_429_but_known_sessions_keep_working(own):
    good = generated(own)
    # Guesser and browser on an address of their own (127.0.0.2 reaches 127.0.0.1 too): the count starts at
    # zero whichever tests ran before (the one above guesses wrong from 127.0.0.1), and the lockout does not
    # refuse the tests that log in from 127.0.0.1 after this one.
    address = "127.0.0.2"

    def client(**kwargs) -> httpx.Client:
        return httpx.Client(base_url=own.url, transport=httpx.HTTPTransport(local_address=address), **kwargs)

    with client(auth=good) as session:
        assert session.get("/metrics").status_code == 200  # a browser that logged in before the attack
        codes = []
        for i in range(12):
            with client() as guesser:
                codes.append(guesser.get("/metrics", auth=("wenmo", f"guess{i}")).status_code)
        assert codes == [401] * 9 + [429] * 3, codes  # the 10th wrong guess in the window locks the address
        with client() as guesser:
            locked = guesser.get("/metrics", auth=("wenmo", "guess-again"))
            assert locked.status_code == 429
            assert 250 <= int(locked.headers["retry-after"]) <= 300
            assert "too many failed logins" in locked.json()["error"]["message"]
            # even the right password is not checked from a locked address (no oracle for the guesser) …
            assert guesser.get("/metrics", auth=good).status_code == 429
            token = base64.b64encode(f"{good[0]}:{good[1]}".encode()).decode()
            assert guesser.get("/metrics", headers={"Authorization": "basic " + token}).status_code == 429
        # … but the browser that had logged in keeps working, on its session cookie
        assert "wenmo_session" in session.cookies
        assert session.get("/metrics").status_code == 200
    assert httpx.get(own.url + "/metrics", auth=good).status_code == 200  # other addresses log in as usual
    assert httpx.get(own.url + "/readyz").status_code == 200  # the probes never needed auth


def test_sigterm_drains_in_flight_work_refuses_new_work_and_exits_0(draining):
    """An HTTP request and a UI job (through gradio_client) are running when SIGTERM arrives: both finish
    (the UI job's files are still downloadable), new work gets 503, and the process exits 0."""
    from gradio_client import Client
    from gradio_client.utils import Status

    own = draining
    good = generated(own)
    result: dict[str, httpx.Response] = {}

    def long_request() -> None:
        with httpx.Client(base_url=own.url, auth=good, timeout=60) as c:
            result["r"] = c.post("/v1/embeddings", json={"input": HEAVY})

    ui = Client(own.url + "/", headers=basic_header(*good), verbose=False, analytics_enabled=False)
    with httpx.Client(base_url=own.url, auth=good, timeout=10) as c:
        t = threading.Thread(target=long_request)
        t.start()
        deadline = time.monotonic() + 10
        while "wenmo_in_flight 1" not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the long request never started"
            time.sleep(0.02)
        job = ui.submit("\n".join(HEAVY[:600]), None, True, False, api_name="/embed")
        while job.status().code not in (Status.PROCESSING, Status.PROGRESS):
            assert time.monotonic() < deadline + 10, f"the UI job never started: {job.status()}"
            time.sleep(0.02)
        own.signal(signal.SIGTERM)
        # The signal is handled on the server's loop: wait for readiness to turn, with the work still running.
        while (ready := httpx.get(own.url + "/readyz")).status_code == 200:
            assert time.monotonic() < deadline + 20, "readiness never turned after SIGTERM"
            time.sleep(0.02)
        assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
        refused = c.post("/v1/embeddings", json={"input": "新的"})
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "5"
        assert httpx.get(own.url + "/", auth=good).status_code == 503  # the page is new work too
        t.join(timeout=30)
        summary, _preview, _json, jsonl, _csv, _npy = job.result(timeout=30)
    r = result["r"]
    assert r.status_code == 200
    assert len(r.json()["data"]) == len(HEAVY)
    assert "**600**" in summary
    assert sum(1 for _ in open(jsonl, encoding="utf-8")) == 600
    assert own.wait_exit(timeout_s=30) == 0
    logs = own.logs()
    assert "event=drain_started in_flight=" in logs and "event=drained" in logs
    assert "Traceback" not in logs
