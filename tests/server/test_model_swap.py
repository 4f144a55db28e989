"""Serving a tuned checkpoint without a restart, against a real `serve --demo` process: requests posted from
several threads during a swap and a rollback all succeed, /readyz answers 200 throughout, every answer comes
wholly from one model (its `model` field names the weights its vectors came from), the answers after the swap
come from the new weights and after the rollback from the old ones again; /metrics and GET /v1/models name the
checkpoint that serves; paths outside the tuned directory are refused (403), another role's checkpoint is 400.
The "tuned" checkpoints are copies of the demo ones with perturbed weights (fixtures.build_perturbed)."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from server_harness import WenmoServer

from app.models.fixtures import build_perturbed

SOURCE = "今天天气很好"
CANDIDATES = ["天气不错", "我喜欢这部电影", "北京"]


@pytest.fixture(scope="module")
def swap_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    server = WenmoServer(root / "state", ["--max-concurrent", "8", "--max-queue", "64"],
                         env={"WENMO_MODEL_DIR": str(root / "models")})
    try:
        server.wait_ready()
        demo = root / "state" / "demo-models"
        build_perturbed(demo / "gte", demo / "tuned" / "embed-t")
        build_perturbed(demo / "structbert", demo / "tuned" / "cross-t", scale=1.0)
        yield server
    finally:
        server.close()


def embed(client: httpx.Client) -> tuple[int, str | None, np.ndarray | None]:
    r = client.post("/v1/embeddings", json={"input": [SOURCE]})
    if r.status_code != 200:
        return r.status_code, r.text, None
    body = r.json()
    return 200, body["model"], np.array(body["data"][0]["embedding"], dtype=np.float32)


def rerank(client: httpx.Client) -> tuple[int, str | None, dict[int, float] | None]:
    r = client.post("/v1/similarity", json={"source": SOURCE, "candidates": CANDIDATES, "rerank": True})
    if r.status_code != 200:
        return r.status_code, r.text, None
    body = r.json()
    return 200, body["cross_model"], {h["index"]: h["cross_score"] for h in body["results"]}


def test_a_swap_and_a_rollback_under_concurrent_requests_lose_none(swap_server):
    with swap_server.client() as c:
        _, old_name, old_vec = embed(c)
        _, old_cross, old_scores = rerank(c)
    assert (old_name, old_cross) == ("demo:gte", "demo:structbert")

    stop = threading.Event()
    answers: list[tuple[str, int, str | None, object]] = []
    ready: list[int] = []

    def post(kind: str) -> None:
        with swap_server.client() as client:
            while not stop.is_set():
                answers.append((kind, *(embed(client) if kind == "embed" else rerank(client))))

    def poll_ready() -> None:
        with httpx.Client(base_url=swap_server.url, timeout=30) as client:
            while not stop.is_set():
                ready.append(client.get("/readyz").status_code)

    threads = [threading.Thread(target=post, args=(k,)) for k in ("embed", "embed", "cross", "cross")]
    threads.append(threading.Thread(target=poll_ready))
    for t in threads:
        t.start()
    try:
        with swap_server.client() as c:
            swapped = c.post("/v1/models/embed", json={"checkpoint": "embed-t"})
            assert swapped.status_code == 200, swapped.text
            assert swapped.json()["name"] == "tuned/embed-t" and swapped.json()["tuned"] is True
            assert c.post("/v1/models/cross", json={"checkpoint": "cross-t"}).status_code == 200
            _, new_name, new_vec = embed(c)
            _, new_cross, new_scores = rerank(c)
            metrics = c.get("/metrics").text
            listed = c.get("/v1/models").json()["data"]
            back = c.post("/v1/models/embed/rollback")
            assert back.status_code == 200 and back.json()["name"] == "demo:gte"
            assert c.post("/v1/models/cross/rollback").status_code == 200
            _, back_name, back_vec = embed(c)
            _, back_cross, back_scores = rerank(c)
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:3]
    assert ready and set(ready) == {200}
    assert len(answers) >= 20

    # The answers after the swap come from the new weights, and after the rollback from the old ones again.
    assert (new_name, new_cross) == ("tuned/embed-t", "tuned/cross-t")
    assert float(np.abs(new_vec - old_vec).max()) > 0.05
    assert max(abs(new_scores[i] - old_scores[i]) for i in old_scores) > 1e-3
    assert (back_name, back_cross) == ("demo:gte", "demo:structbert")
    np.testing.assert_allclose(back_vec, old_vec, atol=1e-6)
    assert back_scores == pytest.approx(old_scores, abs=1e-6)
    # Every answer during the swaps came wholly from the model it names: its vector is that model's vector.
    by_name = {"demo:gte": old_vec, "tuned/embed-t": new_vec}
    for kind, _, name, value in answers:
        if kind == "embed":
            np.testing.assert_allclose(value, by_name[name], atol=1e-5)
    assert {a[2] for a in answers if a[0] == "embed"} <= set(by_name)

    assert 'wenmo_model_info{checkpoint="tuned/embed-t",path=' in metrics
    assert 'role="embed"} 1.0' in metrics
    embed_state = next(m for m in listed if m["role"] == "embed")
    assert embed_state["name"] == "tuned/embed-t" and embed_state["previous"].endswith("/gte")
    assert [p.rsplit("/", 1)[1] for p in embed_state["tuned_checkpoints"]] == ["embed-t"]


@pytest.mark.parametrize(("role", "checkpoint", "status", "words"), [
    ("embed", "/etc", 403, "only checkpoints under the tuned directory"),
    ("embed", "../../../../etc", 403, "only checkpoints under the tuned directory"),
    ("embed", "cross-t", 400, "is a cross checkpoint"),
    ("cross", "embed-404", 400, "no such directory"),
    ("bogus", "original", 400, "no model role 'bogus'"),
])
def test_a_checkpoint_the_server_may_not_serve_is_refused_with_a_clear_message(swap_server, role, checkpoint, status,
                                                                                words):
    with swap_server.client() as c:
        r = c.post(f"/v1/models/{role}", json={"checkpoint": checkpoint})
        assert r.status_code == status, r.text
        assert words in r.json()["error"]["message"]
        assert c.get("/v1/models").json()["data"][0]["name"] == "demo:gte"


def test_a_rollback_with_nothing_to_go_back_to_and_a_body_without_checkpoint(swap_server):
    with swap_server.client() as c:
        r = c.post("/v1/models/nlu/rollback")
        assert r.status_code == 400 and "nothing to roll back to" in r.json()["error"]["message"]
        r = c.post("/v1/models/embed", json={"path": "x"})
        assert r.status_code == 422 and "checkpoint: required" in r.json()["error"]["message"]
        assert c.get("/v1/models/embed").status_code == 405


def test_the_status_tabs_control_swaps_and_rolls_back_and_the_footer_names_the_checkpoint(swap_server):
    from gradio_client import Client
    from server_harness import PASSWORD, USER, basic_header

    gradio = Client(swap_server.url + "/", headers=basic_header(USER, PASSWORD), verbose=False,
                    analytics_enabled=False)
    listed = gradio.predict("embed", api_name="/checkpoints")
    names = [label for label, _ in listed["choices"]]
    assert names == ["原始 original", "embed-t"]
    tuned_path = listed["choices"][1][1]
    serving = gradio.predict("embed", tuned_path, api_name="/serve_checkpoint")
    assert "向量 embed: `tuned/embed-t` (调优 tuned)" in serving and "rollback to `gte`" in serving
    assert "`tuned/embed-t`" in gradio.predict(api_name="/footer")
    with swap_server.client() as c:
        assert c.post("/v1/embeddings", json={"input": "北京"}).json()["model"] == "tuned/embed-t"
    serving = gradio.predict("embed", api_name="/rollback_checkpoint")
    assert "向量 embed: `demo:gte` · " in serving
    assert "`demo:gte`" in gradio.predict(api_name="/footer")
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="only checkpoints under the tuned directory"):
        gradio.predict("embed", "/etc", api_name="/serve_checkpoint")
