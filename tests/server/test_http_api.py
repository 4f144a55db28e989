"""The HTTP routes with values checked: embeddings against the CLI and base64 against floats, similarity
against the embeddings, NLU offsets against the text, metrics against the requests made."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import REPO_ROOT, basic_header, clean_env

TEXTS = ["今天天气很好", "我喜欢看电影", "北京天安门", "hello world 123"]


def embed_api(client, texts, **extra):
    r = client.post("/v1/embeddings", json={"input": texts, "model": "anything", **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def cli_vectors(server, tmp_path_factory) -> np.ndarray:
    """`python -m app embed --demo` on the same demo checkpoints: an independent path to the same model."""
    src = tmp_path_factory.mktemp("cli") / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "app", "embed", "--demo", "--state-dir", str(server.state_dir),
                          "--input", str(src)], cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    return np.array([r["vector"] for r in rows], dtype=np.float32)


def test_probes_answer_without_auth_and_say_nothing_else(server):
    import httpx

    h = httpx.get(server.url + "/healthz")
    r = httpx.get(server.url + "/readyz")
    assert (h.status_code, h.json()) == (200, {"status": "ok"})
    assert (r.status_code, r.json()) == (200, {"status": "ready"})


def test_embeddings_openai_shape_and_values_match_the_cli(client, cli_vectors):
    body = embed_api(client, TEXTS)
    assert body["object"] == "list"
    assert body["model"] == "demo:gte"
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    assert all(d["object"] == "embedding" and d["truncated"] is False for d in body["data"])
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(vectors, cli_vectors, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]
    # [CLS] + one token per Chinese character + [SEP] for the first text
    assert body["usage"]["prompt_tokens"] >= len(TEXTS[0]) + 2


def test_embeddings_single_string_and_base64_decode_to_the_same_floats(client):
    floats = embed_api(client, TEXTS[0])["data"]
    b64 = embed_api(client, TEXTS[0], encoding_format="base64")["data"]
    assert len(floats) == len(b64) == 1
    decoded = np.frombuffer(base64.b64decode(b64[0]["embedding"]), dtype="<f4")
    assert decoded.shape == (32,)
    np.testing.assert_array_equal(decoded, np.array(floats[0]["embedding"], dtype=np.float32))


def test_embeddings_flag_truncated_texts(client):
    long_text = "北京" * 400  # 800 characters, more than the model's 512 tokens
    data = embed_api(client, [long_text, "短"])["data"]
    assert [d["truncated"] for d in data] == [True, False]


def test_embeddings_dimensions_must_match(client):
    assert client.post("/v1/embeddings", json={"input": "x", "dimensions": 32}).status_code == 200
    r = client.post("/v1/embeddings", json={"input": "x", "dimensions": 64})
    assert r.status_code == 400
    assert "gives 32" in r.json()["error"]["message"]


def test_similarity_sorted_and_equal_to_embedding_cosines(client):
    source, candidates = TEXTS[0], TEXTS[1:]
    r = client.post("/v1/similarity", json={"source": source, "candidates": candidates})
    assert r.status_code == 200, r.text
    out = r.json()
    cos = [x["cosine"] for x in out["results"]]
    assert cos == sorted(cos, reverse=True)
    assert sorted(x["text"] for x in out["results"]) == sorted(candidates)
    vecs = np.array([d["embedding"] for d in embed_api(client, [source, *candidates])["data"]])
    for x in out["results"]:
        assert x["cosine"] == pytest.approx(float(vecs[0] @ vecs[1 + x["index"]]), abs=1e-5)
        assert x["cross_score"] is None
    assert out["reranked"] is False and out["model"] == "demo:gte"


def test_similarity_rerank_sorts_by_cross_encoder_probability(client):
    r = client.post("/v1/similarity", json={"source": TEXTS[0], "candidates": TEXTS[1:], "rerank": True})
    assert r.status_code == 200, r.text
    out = r.json()
    probs = [x["cross_score"] for x in out["results"]]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert out["reranked"] is True and out["cross_model"] == "demo:structbert"


def test_nlu_offsets_point_into_the_text(client):
    text = "北大西洋议会春季会议日在西班牙巴塞罗那闭幕"
    schema = {"人物": None, "地理位置": None, "组织机构": None}
    r = client.post("/v1/nlu", json={"text": text, "schema": schema})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "extract" and out["model"] == "demo:rex-uninlu"
    assert out["output"], "random weights still find spans in the tiny model"
    for path in out["output"]:
        for el in path:
            start, end = el["offset"]
            assert text[start:end] == el["span"]
            assert el["type"] in schema
            assert 0.0 <= el["score"] <= 1.0
    # Deterministic: the same call gives the same answer (nothing random, nothing cached to hide it).
    assert client.post("/v1/nlu", json={"text": text, "schema": json.dumps(schema)}).json() == out


def test_nlu_classification_returns_a_label_of_the_schema(client):
    schema = {"正向情感": None, "负向情感": None}
    r = client.post("/v1/nlu", json={"text": "很满意，音质很好", "schema": schema, "task": "classify"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "classify"
    assert len(out["output"]) == 1 and out["output"][0][0]["type"] in schema


# Every wenmo_ series a server exposes once it has answered an HTTP request (the UI-event series come with the
# first UI event; wenmo_cuda_allocated_bytes and wenmo_gpu_memory_used_bytes only with CUDA / NVML).
WENMO_SERIES = {
    "wenmo_http_requests_total", "wenmo_http_request_duration_seconds_bucket",
    "wenmo_http_request_duration_seconds_count", "wenmo_http_request_duration_seconds_sum", "wenmo_busy_total",
    "wenmo_ready", "wenmo_draining", "wenmo_in_flight", "wenmo_queue_depth", "wenmo_max_concurrent",
    "wenmo_max_queue", "wenmo_limiter_rejected_total", "wenmo_engine_forwards_total", "wenmo_engine_items_total",
    "wenmo_engine_shared_forwards_total", "wenmo_engine_waiting_requests", "wenmo_engine_padded_lengths",
    "wenmo_model_memory_bytes",
    "wenmo_process_resident_memory_bytes", "wenmo_model_info", "wenmo_python_allocated_blocks",
}
WENMO_SERIES_LATER = {
    "wenmo_ui_events_total", "wenmo_ui_event_duration_seconds_bucket", "wenmo_ui_event_duration_seconds_count",
    "wenmo_ui_event_duration_seconds_sum", "wenmo_cuda_allocated_bytes", "wenmo_gpu_memory_used_bytes",
    "wenmo_heap_bytes",  # glibc only
    "wenmo_resident_bytes", "wenmo_threads",  # Linux only (/proc/self/status)
}


def metric(text: str, name: str, missing: float | None = None, **labels: str) -> float:
    """A sample's value, read by prometheus_client's parser (label order is not part of a series' identity);
    `missing` when given stands for a series not exported yet (a counter before its first event)."""
    found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.name == name and s.labels == labels]
    if not found and missing is not None:
        return missing
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples in /metrics"
    return found[0]


def test_metrics_count_requests_and_show_gauges(client):
    before = client.get("/metrics").text
    n0 = metric(before, "wenmo_http_requests_total", 0.0, route="/v1/embeddings", method="POST", status="200")
    f0 = metric(before, "wenmo_engine_forwards_total", role="embed")
    i0 = metric(before, "wenmo_engine_items_total", role="embed")
    for _ in range(3):
        embed_api(client, "计数")
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = text.text
    assert metric(text, "wenmo_http_requests_total", route="/v1/embeddings", method="POST", status="200") == n0 + 3
    count = metric(text, "wenmo_http_request_duration_seconds_count", route="/v1/embeddings")
    inf = metric(text, "wenmo_http_request_duration_seconds_bucket", route="/v1/embeddings", le="+Inf")
    assert count == inf >= n0 + 3
    assert metric(text, "wenmo_ready") == 1
    assert metric(text, "wenmo_in_flight") == 0
    assert metric(text, "wenmo_queue_depth") == 0
    assert metric(text, "wenmo_max_concurrent") == 1
    # The engine's embed queue ran each one-text call as one forward of one item (nothing else was waiting).
    assert metric(text, "wenmo_engine_forwards_total", role="embed") == f0 + 3
    assert metric(text, "wenmo_engine_items_total", role="embed") == i0 + 3
    assert metric(text, "wenmo_engine_waiting_requests", role="embed") == 0
    assert "# TYPE wenmo_engine_shared_forwards_total counter" in text
    # "计数" is [CLS] 计 数 [SEP]: 4 tokens, padded to the ladder's first rung (8) — one length, or more if other
    # tests' texts came first, but never more than the ladder's rungs up to the model's 512
    assert 1 <= metric(text, "wenmo_engine_padded_lengths", role="embed") <= 20
    # tiny GTE: 2 layers of hidden 32 over a ~1500-token vocabulary, in fp32
    assert 50_000 < metric(text, "wenmo_model_memory_bytes", role="embed") < 2_000_000
    rss = metric(text, "wenmo_process_resident_memory_bytes")
    assert rss > 50 * 2**20
    # Where it is: the C heap (glibc) holds the models' tensors; freed chunks are a part of what it took.
    heap = {part: metric(text, "wenmo_heap_bytes", part=part) for part in ("in_use", "free", "system")}
    assert 1 * 2**20 < heap["in_use"] < heap["system"] and heap["free"] < heap["system"]
    assert metric(text, "wenmo_python_allocated_blocks") > 10_000
    # …and resident memory by kind adds up to the resident total (two readings a moment apart); the server runs
    # more threads than Python knows of (torch's pool).
    kinds = sum(metric(text, "wenmo_resident_bytes", kind=k) for k in ("anon", "file", "shmem"))
    assert metric(text, "wenmo_resident_bytes", kind="anon") > heap["in_use"] / 2
    assert abs(kinds - rss) < 0.05 * rss, (kinds, rss)
    assert metric(text, "wenmo_threads") >= 2
    assert "# TYPE wenmo_busy_total counter" in text
    # prometheus_client's standard collectors, on the server's own registry.
    assert metric(text, "process_resident_memory_bytes") > 50 * 2**20
    assert metric(text, "process_open_fds") > 0
    assert "python_info{" in text and "python_gc_collections_total{" in text
    # The series names the README and dashboards know, and no others under wenmo_ (no `_created` twins).
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    wenmo = {n for n in names if n.startswith("wenmo_")}
    assert WENMO_SERIES <= wenmo and wenmo - WENMO_SERIES <= WENMO_SERIES_LATER, wenmo ^ WENMO_SERIES


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(client):
    r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")
    assert "\n# TYPE wenmo_busy counter\n" in r.text and 'wenmo_busy_total{surface="http"} ' in r.text


def test_openai_client_gets_the_same_vectors(server, client):
    """The official client (which asks for base64 by default) pointed at Wenmo with basic auth."""
    openai = pytest.importorskip("openai", reason="the openai package is optional (pip install openai)")
    # default_headers replaces the client's "Bearer <api_key>" header with basic auth
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", default_headers=basic_header(*server.auth))
    got = oa.embeddings.create(model="wenmo", input=TEXTS)
    assert got.model == "demo:gte" and [d.index for d in got.data] == [0, 1, 2, 3]
    want = np.array([d["embedding"] for d in embed_api(client, TEXTS)["data"]], dtype=np.float32)
    np.testing.assert_array_equal(np.array([d.embedding for d in got.data], dtype=np.float32), want)
    assert got.usage.prompt_tokens > 0


def test_an_idle_keep_alive_connection_outlives_a_clients_pool_expiry(server):
    """The server used to close idle connections after 5 s — httpx's own pool expiry, and far under a reverse proxy's
    (nginx keeps idle upstream connections 60 s): a request sent on a connection the server was closing was lost
    (ReadError in soaks, 502 behind a proxy). After 6 s idle the same connection still answers."""
    import http.client
    import time

    from server_harness import PASSWORD, USER, basic_header

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        local = []
        for pause in (0, 6):
            time.sleep(pause)
            conn.request("GET", "/v1/models", headers=basic_header(USER, PASSWORD))
            local.append(conn.sock.getsockname())
            r = conn.getresponse()
            r.read()
            assert r.status == 200 and r.getheader("connection", "keep-alive").lower() != "close"
        assert local[0] == local[1]  # the same connection both times
    finally:
        conn.close()
