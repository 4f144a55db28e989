"""One valid request must not exhaust the server (README "Security": work budgets, deadline, cancellation).

Nested RexUniNLU schemas multiply the work: each span found for a type with sub-types is read again over the
whole text. On the demo model (random weights find spans everywhere) `{"人物": {"职位": null}}` on 200
characters used to run 21 s and return 240,467 paths; 20,000 characters grew the server to 22 GB. Now the
NLU budgets refuse such a request with 422, the deadline stops any request, and a client that hangs up
releases its slot.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
from server_harness import PASSWORD, USER

NESTED = {"人物": {"职位": None}}
TEXT_200 = ("北大西洋议会春季会议26日在西班牙巴塞罗那闭幕，会长谷口清太郎等人出席。" * 8)[:200]
# A worst-case shape within the documented limits: 20,000 characters, 16 roots each 4 deep (64 types; with
# 512 types allowed, 128 such roots are refused sooner, by the path budget).
WORST_SCHEMA = {f"根{i}": {f"二{i}": {f"三{i}": {f"四{i}": None}}} for i in range(16)}
WORST_TEXT = ("谷口清太郎在日本名古屋积极筹资，北大西洋议会在西班牙闭幕。" * 700)[:20000]


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_nested_schema_that_multiplies_is_refused_with_422_and_the_server_keeps_serving(server):
    with server.client() as c:
        r = c.post("/v1/nlu", json={"text": TEXT_200, "schema": NESTED})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["type"] == "budget_exceeded_error"
        assert "WENMO_NLU_MAX_PATHS" in err["message"] and "narrow" in err["message"].lower()
        ok = c.post("/v1/nlu", json={"text": "谷口清太郎在日本", "schema": {"人物": None}})
        assert ok.status_code == 200 and ok.json()["task"] == "extract"
        assert metric(c, "wenmo_in_flight") == 0


def test_worst_request_within_the_limits_stays_bounded_in_memory(server):
    with server.client(timeout_s=120) as c:
        before = metric(c, "wenmo_process_resident_memory_bytes")
        after = []
        for _ in range(6):
            r = c.post("/v1/nlu", json={"text": WORST_TEXT, "schema": WORST_SCHEMA})
            assert r.status_code == 422, r.text[:300]
            assert r.json()["error"]["type"] == "budget_exceeded_error"
            after.append(metric(c, "wenmo_process_resident_memory_bytes"))
    mib = [round((a - before) / 2**20) for a in after]
    # Before the budget this request grew the server to 22 GB; now one costs its forward's activations.
    assert after[0] - before < 512 * 2**20, f"RSS growth per request, MiB: {mib}"
    # And nothing of it stays: before the fix each refusal kept its failed forward's frames (~60 MB: the
    # error's traceback was a reference cycle through anyio's future), growing memory request after request.
    assert after[-1] - after[0] < 100 * 2**20, f"RSS growth after each request, MiB: {mib}"


def test_forward_budget_is_a_setting(start_server):
    s = start_server(("--nlu-max-forwards", "3"))
    with s.client() as c:
        r = c.post("/v1/nlu", json={"text": "北京欢迎你。" * 400, "schema": {"地点": None}})
        assert r.status_code == 422
        assert "more than 3 model passes" in r.json()["error"]["message"]
        assert "WENMO_NLU_MAX_FORWARDS" in r.json()["error"]["message"]


def test_deadline_stops_the_work_and_frees_the_slot(start_server):
    # Budgets out of the way: only the deadline can stop this request (it ran 21 s before the budgets).
    s = start_server(("--nlu-max-paths", "100000000", "--nlu-max-forwards", "1000000", "--request-timeout-s",
                      "1.5", "--max-concurrent", "1"))
    with s.client() as c:
        start = time.monotonic()
        r = c.post("/v1/nlu", json={"text": TEXT_200, "schema": NESTED})
        took = time.monotonic() - start
        assert r.status_code == 504, r.text[:300]
        assert r.json()["error"]["type"] == "timeout_error"
        assert "WENMO_REQUEST_TIMEOUT_S" in r.json()["error"]["message"]
        # Stopped at a checkpoint (one forward of the tiny model apart) soon after the 1.5 s deadline, not after
        # the whole walk (21 s measured = 14 deadlines): 10 deadlines is room for a very busy machine.
        assert took < 10 * 1.5, f"the 504 came {took:.1f} s after the request"
        assert metric(c, "wenmo_in_flight") == 0
        assert c.post("/v1/nlu", json={"text": "北京", "schema": {"地点": None}}).status_code == 200


def test_a_client_that_hangs_up_releases_its_slot(start_server):
    s = start_server(("--nlu-max-paths", "100000000", "--nlu-max-forwards", "1000000", "--request-timeout-s",
                      "600", "--max-concurrent", "1"))
    auth = (USER, PASSWORD)

    def doomed() -> None:
        try:
            httpx.post(s.url + "/v1/nlu", json={"text": TEXT_200, "schema": NESTED}, auth=auth, timeout=1.0)
        except httpx.TimeoutException:
            pass  # the client gives up and closes the connection

    t = threading.Thread(target=doomed)
    t.start()
    t.join(30)
    with s.client() as c:
        deadline = time.monotonic() + 20
        while metric(c, "wenmo_in_flight") != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(c, "wenmo_in_flight") == 0, "the abandoned request still holds its slot"
        assert c.post("/v1/nlu", json={"text": "北京", "schema": {"地点": None}}).status_code == 200
    assert "event=client_disconnected" in s.logs()
