"""Bad input on every route is a 4xx (or a readable UI error) that says what to change, and the server
stays healthy; the one concurrency cap answers a burst with busy + Retry-After, never a 5xx or a hang."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

LONG = "北" * 20001  # one over the default WENMO_MAX_CHARS
# Batches the tiny model needs ~1 s / ~2 s for on a 2-core CPU: long enough to be "in flight" for a while.
HEAVY = ["北京天安门上海" * 20 + str(i) for i in range(1000)]
HEAVIER = HEAVY * 2


@pytest.mark.parametrize(("route", "body", "status", "needle"), [
    ("/v1/embeddings", {"input": []}, 400, "empty"),
    ("/v1/embeddings", {"input": ["ok", "   "]}, 400, "item(s) 1 are empty or whitespace"),
    ("/v1/embeddings", {"input": ""}, 400, "empty or whitespace"),
    ("/v1/embeddings", {"input": LONG}, 400, "20001 characters, the limit is 20000 (WENMO_MAX_CHARS)"),
    ("/v1/embeddings", {"input": ["x"] * 10001}, 400, "the limit is 10000 (WENMO_MAX_TEXTS)"),
    ("/v1/embeddings", {"input": 5}, 422, "input: expected str or list[str] (got 5)"),
    ("/v1/embeddings", {"input": ["a", 7]}, 422, "input[1]: Input should be a valid string (got 7)"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 422, "encoding_format"),
    ("/v1/embeddings", {}, 422, "input: required, but missing"),
    ("/v1/embeddings", [1, 2], 422, "the body must be a JSON object"),
    ("/v1/similarity", {"source": " ", "candidates": ["a"]}, 400, "source must be a non-empty text"),
    ("/v1/similarity", {"source": "a", "candidates": []}, 400, "candidates is empty"),
    ("/v1/similarity", {"source": "a", "candidates": "b"}, 422, "candidates: Input should be a valid list"),
    ("/v1/similarity", {"candidates": ["b"]}, 422, "source: required, but missing"),
    ("/v1/similarity", {"source": "a", "candidates": ["b"], "rerank": "maybe"}, 422, "rerank"),
    ("/v1/nlu", {"text": "北京", "schema": '{"人物": null,'}, 400, "schema is not valid JSON"),
    ("/v1/nlu", {"text": "北京", "schema": {}}, 400, "schema is empty"),
    ("/v1/nlu", {"text": "北京", "schema": {"人物": [1]}}, 400, 'schema["人物"]: the value is a list'),
    ("/v1/nlu", {"text": "", "schema": {"人物": None}}, 400, "empty"),
    ("/v1/nlu", {"text": "北京", "schema": ["人物"]}, 422, "schema"),
    ("/v1/nlu", {"text": "北京", "schema": {"人物": None}, "task": "summarise"}, 422, "task"),
    ("/v1/nlu", {"text": "[TYPE]北京", "schema": {"人物": None}}, 400, "control token [TYPE]"),
])
def test_bad_json_input_is_a_4xx_with_a_message(client, route, body, status, needle):
    r = client.post(route, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"]
    assert err["type"] == "invalid_request_error"


def test_malformed_json_is_400_naming_the_position(client):
    r = client.post("/v1/embeddings", content=b'{"input": ["a",', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"] and "character" in r.json()["error"]["message"]


def test_oversized_body_is_413_before_it_is_read(client):
    big = {"input": ["字" * 1000] * 400}  # ~1.2 MiB of UTF-8, over the shared server's 1 MiB cap
    r = client.post("/v1/embeddings", json=big)
    assert r.status_code == 413
    assert "WENMO_MAX_UPLOAD_MIB" in r.json()["error"]["message"]


def test_bad_input_through_gradio_is_a_readable_error(gradio, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一行\n\n第三行\n".encode() + b"\xff\xfe broken\n")
    with pytest.raises(AppError) as e:
        gradio.predict("", handle_file(str(bad)), True, False, api_name="/embed")
    assert "第 4 行不是有效的 UTF-8" in str(e.value) and "bad.txt" in str(e.value)
    blank = tmp_path / "blank.txt"
    blank.write_text("第一行\n\n第三行\n", encoding="utf-8")
    with pytest.raises(AppError) as e:
        gradio.predict("", handle_file(str(blank)), True, False, api_name="/embed")
    assert "第 2 行为空" in str(e.value) and "跳过空行" in str(e.value)
    # The same file with "skip blank lines" ticked goes through, one vector per non-blank line.
    summary, *_ = gradio.predict("", handle_file(str(blank)), True, True, api_name="/embed")
    assert "**2**" in summary
    with pytest.raises(AppError) as e:
        gradio.predict("北京", '{"人物": }', "auto", api_name="/nlu")
    assert "schema is not valid JSON" in str(e.value)
    with pytest.raises(AppError) as e:
        gradio.predict("北京", "   \n", None, False, False, api_name="/similarity")
    assert "没有输入 (no input)" in str(e.value)
    with pytest.raises(AppError) as e:
        gradio.predict(" ", "上海", None, False, False, api_name="/similarity")
    assert "source must be a non-empty text" in str(e.value)


def test_oversized_upload_is_refused_by_gradio(server, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(("字" * 100 + "\n") * 4000, encoding="utf-8")  # ~1.2 MiB
    with open(big, "rb") as fh:
        r = httpx.post(server.url + "/gradio_api/upload", files={"files": ("big.txt", fh, "text/plain")},
                       auth=server.auth, timeout=30)
    assert r.status_code == 413, r.text
    assert "size" in r.text.lower()


def test_server_is_healthy_after_bad_input(server, client):
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert client.post("/v1/embeddings", json={"input": "还活着"}).status_code == 200


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" ([0-9.e+-]+)$",
                  text, re.M)
    assert m, name
    return float(m.group(1))


def burst(server, n: int) -> list[httpx.Response]:
    results: list[httpx.Response] = [None] * n  # type: ignore[list-item]
    gate = threading.Barrier(n)

    def one(i: int) -> None:
        with server.client(timeout_s=60) as c:
            gate.wait()
            results[i] = c.post("/v1/embeddings", json={"input": HEAVY})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    return results


def test_burst_gets_busy_answers_with_retry_after_and_no_5xx(server, client):
    busy_before = metric(client.get("/metrics").text, "wenmo_busy_total", surface="http")
    results = burst(server, 8)
    assert all(r is not None for r in results), "a request of the burst got no answer"
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 429}, codes
    # cap 1 + queue 2: at least three are served; the rest are told at once to come back
    assert codes.count(200) >= 3 and codes.count(429) >= 1, codes
    # "At once": a busy answer takes less time than the quickest served request, which had to run its
    # whole batch (≥ 1 s); a refusal that waited in line for a slot first would take longer than that.
    quickest_served = min(r.elapsed for r in results if r.status_code == 200)
    for r in results:
        if r.status_code == 429:
            assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "overloaded_error"
            assert "busy" in r.json()["error"]["message"]
            assert r.elapsed < quickest_served, (r.elapsed, quickest_served)
        else:
            assert len(r.json()["data"]) == len(HEAVY)
    text = client.get("/metrics").text
    assert metric(text, "wenmo_busy_total", surface="http") == busy_before + codes.count(429)
    assert metric(text, "wenmo_in_flight") == 0 and metric(text, "wenmo_queue_depth") == 0
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert client.post("/v1/embeddings", json={"input": "之后"}).status_code == 200


def test_the_ui_shares_the_cap_with_the_http_api(server, client, gradio):
    """While HTTP requests hold the one slot and fill the queue, a UI event is told "busy" at once."""
    holders = []

    def hold() -> None:
        with server.client(timeout_s=60) as c:
            holders.append(c.post("/v1/embeddings", json={"input": HEAVIER}).status_code)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if metric(text, "wenmo_in_flight") == 1 and metric(text, "wenmo_queue_depth") >= 2:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the HTTP requests never filled the cap and the queue")
    with pytest.raises(AppError) as e:
        gradio.predict("一条", None, True, False, api_name="/embed")
    assert "服务繁忙" in str(e.value)
    for t in threads:
        t.join(timeout=60)
    assert holders == [200, 200, 200]
    summary, *_ = gradio.predict("一条", None, True, False, api_name="/embed")  # and free again afterwards
    assert "**1**" in summary
