"""Two replicas behind a load balancer: a local stand-in for a Kubernetes Service (haproxy with affinity), not
Kubernetes.

Two real `wenmo serve --demo` processes share one credentials file (WENMO_AUTH_FILE, as a mounted Secret gives
every pod the same one) behind haproxy from Debian, configured as README "Several replicas: what changes" describes
the Service: health checks on /readyz, cookie affinity (the Ingress-style stickiness the UI needs: a Gradio event's
join and its result stream must reach the same replica), and retries on another replica for what a replica refused
unstarted (503 while draining) or could not take (a refused or closed connection). What it shows: the UI and the
API work through it, an export is downloaded from the replica that made it, and SIGTERM to one replica under load
fails no request at all while the other keeps serving.

Skipped with a reason without haproxy (tests/run.sh installs it when run as root).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_harness import REPO_ROOT, WenmoServer, basic_header, clean_env, free_port

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed: apt-get install haproxy "
                                                        "(tests/run.sh installs it when run as root)")

USER, PASSWORD = "alice", "shared-secret"
REPLICA_HEADER = "x-wenmo-replica"  # set by the stand-in's config below (which server answered), not by the app
AFFINITY_COOKIE = "WENMO_REPLICA"
WORKERS = 4  # threads posting /v1/embeddings without a pause: on 2 CPU cores, both replicas always busy


def haproxy_config(port: int, replicas: dict[str, int]) -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{p} check cookie {name}" for name, p in replicas.items())
    return f"""\
global
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A request a replica did not start (503 while draining: the app's gate does no work for it) or could not take
    # (connection refused or closed once it exits) goes to the other replica, up to 3 times.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503
    option http-buffer-request  # the whole request in the buffer before it is sent: only such a one can be resent
    option forwardfor

frontend wenmo
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    cookie {AFFINITY_COOKIE} insert indirect nocache httponly
    # Readiness every 0.5 s, 2 s to answer, 3 misses to take a replica out: a replica whose cores are busy with
    # a batch answers its probe late, and one slow answer must not move its users (and their exports) elsewhere.
    # A draining replica's refusals are retried elsewhere meanwhile (above), so a slow probe costs no request.
    option httpchk GET /readyz
    http-check expect status 200
    timeout check 2s
    default-server inter 500ms fall 3 rise 2
    http-response set-header X-Wenmo-Replica %[srv_name]
{servers}
"""


class StandIn:
    """Two replicas and haproxy in front of them; `url` is the balancer's."""

    def __init__(self, root: Path, template: Path) -> None:
        users = root / "secret" / "users"  # the Secret's file: one for both replicas
        users.parent.mkdir(parents=True)
        users.write_text(f"# as mounted from a Kubernetes Secret\n{USER}:{PASSWORD}\n", encoding="utf-8")
        # --trusted-proxies: haproxy's X-Forwarded-For names the client, so the lockout is per client, not per
        # balancer (README "Several replicas: what changes").
        args = ["--drain-s", "20", "--trusted-proxies", "127.0.0.1"]
        self.replicas = {name: WenmoServer(root / name, args, auth=None, env={"WENMO_AUTH_FILE": str(users)},
                                           template=template) for name in ("a", "b")}
        self.proxy: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = root / "haproxy.cfg"
        self.log_path = root / "haproxy.log"

    def start(self) -> StandIn:
        for replica in self.replicas.values():
            replica.wait_ready()
        self.config.write_text(haproxy_config(self.port, {n: r.port for n, r in self.replicas.items()}))
        with self.log_path.open("wb") as log:
            self.proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)], stdout=log,
                                          stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=clean_env())
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while seen != set(self.replicas):  # both replicas reached through the balancer
            assert self.proxy.poll() is None, f"haproxy exited:\n{self.log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"balancer never reached both replicas (saw {seen})"
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.url + "/healthz", timeout=2)
                if r.status_code == 200:
                    seen.add(r.headers[REPLICA_HEADER])
            time.sleep(0.05)
        return self

    def close(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait(timeout=10)
        for replica in self.replicas.values():
            replica.close()

    def logged(self, wanted) -> list[str]:  # noqa: ANN001
        """haproxy's request log lines that `wanted` picks: `… replicas/<server> timers <status> …`; waits a little
        for them, as the log is written when a response ends."""
        deadline = time.monotonic() + 5
        while True:
            lines = [line for line in self.log_path.read_text().splitlines() if wanted(line)]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def client(self, **kwargs) -> httpx.Client:  # noqa: ANN003
        return httpx.Client(base_url=self.url, auth=(USER, PASSWORD), timeout=60, **kwargs)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The demo checkpoints, built once and copied into each replica's state folder (identical weights, as every
    pod of a Deployment loads the same model)."""
    from app.composition import demo_models

    root = tmp_path_factory.mktemp("template")
    demo_models(root)
    return root


@pytest.fixture()
def stand_in(tmp_path, template) -> Iterator[StandIn]:
    s = StandIn(tmp_path, template)
    try:
        yield s.start()
    finally:
        s.close()


def embed(c: httpx.Client, texts: list[str]) -> tuple[str, np.ndarray]:
    r = c.post("/v1/embeddings", json={"input": texts})
    assert r.status_code == 200, r.text
    return r.headers[REPLICA_HEADER], np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_api_and_ui_work_through_the_balancer(stand_in):
    # The API: clients without the affinity cookie are spread over both replicas; both take the Secret's
    # credentials and give the same vectors.
    vectors: dict[str, np.ndarray] = {}
    for _ in range(6):
        with stand_in.client() as c:
            replica, v = embed(c, ["北京天安门", "上海"])
            vectors.setdefault(replica, v)
    assert set(vectors) == {"a", "b"}
    assert np.array_equal(vectors["a"], vectors["b"]) and vectors["a"].shape == (2, 32)
    assert httpx.post(stand_in.url + "/v1/embeddings", json={"input": ["x"]}).status_code == 401
    # A client that keeps cookies (a browser, a requests.Session) stays on one replica.
    with stand_in.client() as c:
        assert len({embed(c, ["杭州"])[0] for _ in range(4)}) == 1
        page = c.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()

    # The UI: gradio_client keeps the balancer's cookie (it does so for replicas behind cookie affinity), so the
    # event's join, its result stream and the export files it downloads all reach the replica that ran it.
    from gradio_client import Client

    ui = Client(stand_in.url + "/", headers=basic_header(USER, PASSWORD), verbose=False, analytics_enabled=False)
    sticky = ui.cookies[AFFINITY_COOKIE]
    assert sticky in {"a", "b"}
    summary, _preview, _json, jsonl, _csv, npy = ui.predict("北京天安门\n上海", None, True, False, api_name="/embed")
    assert "**2**" in summary
    assert np.array_equal(np.load(npy), vectors[sticky])  # the export, downloaded through the balancer
    # Each export lives in the folder of the process that made it: every UI request went to the cookie's replica.
    ui_requests = stand_in.logged(lambda line: '"GET /gradio_api/file=' in line and "vectors.npy" in line)
    assert ui_requests and all(f" replicas/{sticky} " in line and " 200 " in line for line in ui_requests)
    ui_requests = stand_in.logged(lambda line: "/gradio_api/" in line)
    assert all(f" replicas/{sticky} " in line for line in ui_requests), ui_requests


def test_sigterm_to_one_replica_under_load_fails_no_request(stand_in):
    """Requests keep coming while replica a drains and exits: the balancer's health check sees /readyz turn 503,
    a request a sent back with 503 (refused unstarted) or a closed connection goes to b, what a had started
    finishes there. Every request gets 200, and b keeps serving after a is gone."""
    stop = threading.Event()
    answered: Counter[str] = Counter()  # replica → 200s
    failures: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with stand_in.client() as c:
            while not stop.is_set():
                c.cookies.clear()  # no affinity: every request is balanced anew, so both replicas get load
                try:
                    r = c.post("/v1/embeddings", json={"input": [f"第{n}个请求", "北京天安门上海" * 10]})
                except httpx.HTTPError as e:
                    with lock:
                        failures.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    if r.status_code == 200 and len(r.json()["data"]) == 2:
                        answered[r.headers[REPLICA_HEADER]] += 1
                    else:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    def wait_for(condition, what: str, timeout_s: float = 60) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"{what}; answered {dict(answered)}, failures {failures[:5]}"
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(WORKERS)]
    for t in threads:
        t.start()
    a = stand_in.replicas["a"]
    try:
        wait_for(lambda: answered["a"] >= 10 and answered["b"] >= 10, "load never reached both replicas")
        a.signal(signal.SIGTERM)
        assert a.wait_exit(timeout_s=60) == 0
        after = answered["b"]
        wait_for(lambda: answered["b"] >= after + 30, "b stopped serving after a exited")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    log = stand_in.log_path.read_text()
    assert failures == [], log[-3000:]  # haproxy's log: which server answered, after how many retries
    # The case the retries are for did happen: requests a refused while draining, before the health check took it
    # out (3 probes at 0.5 s), were answered by b on a retry (haproxy's log marks them `+N` in the retries field).
    assert any(re.search(r" replicas/b .*/\+\d+ ", line) for line in log.splitlines()), log[-3000:]
    logs = a.logs()
    assert "event=drain_started" in logs and "event=drained" in logs
    with stand_in.client() as c:  # the survivor, alone now
        assert {embed(c, ["成都"])[0] for _ in range(3)} == {"b"}
