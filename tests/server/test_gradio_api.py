"""Every Gradio endpoint through gradio_client (with basic auth headers), values checked against the HTTP
API, which is an independent route to the same service."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from gradio_client import handle_file

TEXTS = ["今天天气很好", "我喜欢看电影", "明天会下雨"]


def api_vectors(client, texts):
    r = client.post("/v1/embeddings", json={"input": texts})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_every_event_is_named(gradio):
    named = set(gradio.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/similarity", "/embed", "/nlu", "/nlu_preset", "/nlu_validate_schema", "/status", "/footer"} <= named


def test_similarity_endpoint_ranks_like_the_http_api(gradio, client):
    summary, table, bars, heat = gradio.predict("今天天气很好", "\n".join(TEXTS[1:]), None, False, False,
                                                api_name="/similarity")
    ref = client.post("/v1/similarity", json={"source": "今天天气很好", "candidates": TEXTS[1:]}).json()
    assert [row[1] for row in table["data"]] == [x["text"] for x in ref["results"]]
    assert [row[2] for row in table["data"]] == [round(x["cosine"], 4) for x in ref["results"]]
    assert [row[0] for row in table["data"]] == [1, 2]
    assert "**2**" in summary
    assert [round(v, 6) for v in (r[1] for r in bars["data"])] == [round(x["cosine"], 6) for x in ref["results"]]
    # 3 texts → a 3×3 heatmap, diagonal 1.00
    assert heat.count("<tr>") == 4 and heat.count("1.00") >= 3


def test_similarity_endpoint_reranks_from_an_uploaded_csv(gradio, tmp_path):
    f = tmp_path / "cands.csv"
    f.write_text("id,text\n1,今天天气不错\n2,我喜欢看电影\n", encoding="utf-8")
    summary, table, _bars, _heat = gradio.predict("今天天气很好", "", handle_file(str(f)), True, False,
                                                  api_name="/similarity")
    assert sorted(row[1] for row in table["data"]) == ["今天天气不错", "我喜欢看电影"]
    probs = [row[3] for row in table["data"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert "cands.csv" in summary and "cross-encoder" in summary


def test_embed_endpoint_files_and_json_hold_the_api_vectors(gradio, client, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    summary, preview, as_json, jsonl, csv_path, npy = gradio.predict("", handle_file(str(src)), True, False,
                                                                     api_name="/embed")
    want = api_vectors(client, TEXTS)
    assert "**3**" in summary and "**32**" in summary and "texts.txt" in summary
    assert [row[1] for row in preview["data"]] == TEXTS
    assert preview["headers"][4:] == [f"d{j}" for j in range(10)]
    np.testing.assert_allclose([row[4:] for row in preview["data"]], want[:, :10], atol=1e-5)
    copied = json.loads(as_json)
    assert [c["dimension"] for c in copied] == [32, 32, 32]
    np.testing.assert_array_equal(np.array([c["vector"] for c in copied], dtype=np.float32), want)
    rows = [json.loads(line) for line in open(jsonl, encoding="utf-8")]
    assert [r["text"] for r in rows] == TEXTS and all(r["dimension"] == 32 for r in rows)
    np.testing.assert_allclose([r["vector"] for r in rows], want, atol=1e-7)
    with open(csv_path, encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0][:4] == ["index", "text", "truncated", "d0"] and len(table[0]) == 3 + 32
    np.testing.assert_allclose(np.array([r[3:] for r in table[1:]], dtype=np.float64), want, atol=1e-7)
    np.testing.assert_array_equal(np.load(npy), want)


def test_embed_endpoint_raw_vectors_when_not_normalised(gradio):
    _s, _p, as_json, *_ = gradio.predict("\n".join(TEXTS), None, False, False, api_name="/embed")
    norms = np.linalg.norm([c["vector"] for c in json.loads(as_json)], axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)


def test_nlu_endpoint_matches_the_http_api(gradio, client):
    text = "北大西洋议会春季会议日在西班牙巴塞罗那闭幕"
    schema = '{"人物": null, "地理位置": null}'
    summary, marked, table, raw = gradio.predict(text, schema, "extract", api_name="/nlu")
    ref = client.post("/v1/nlu", json={"text": text, "schema": schema, "task": "extract"}).json()
    got = json.loads(raw)
    assert got["output"] == ref["output"] and got["task"] == "extract"
    assert len(table["data"]) == len(ref["output"])
    assert "".join(piece["token"] for piece in marked) == text  # the highlight covers the text exactly
    labels = {piece["class_or_confidence"] for piece in marked} - {None}
    assert labels and labels <= {"人物", "地理位置"}
    assert f"**{len(ref['output'])}**" in summary


def test_nlu_preset_fills_schema_text_and_task(gradio):
    from app.models.uninlu.presets import preset

    schema, text, task, note = gradio.predict("sentiment", api_name="/nlu_preset")
    p = preset("sentiment")
    assert json.loads(schema) == p["schema"] and text == p["text"] and task == "classify"
    assert p["title_en"] in note


@pytest.mark.parametrize(("schema", "starts"), [
    ('{"人物": null, "组织机构": {"创始人(人物)": null}}', "✓ schema 有效 (valid): 3 个类型 types, 2 层"),
    ('{"人物": null,}', "✗ schema is not valid JSON: line 1, column"),
    ('["人物"]', "✗ schema must be a JSON object"),
    ('{"人物": 1}', '✗ schema["人物"]: the value is a number'),
])
def test_schema_validation_messages(gradio, schema, starts):
    assert gradio.predict(schema, api_name="/nlu_validate_schema").startswith(starts)


def test_status_and_footer_name_the_models(gradio):
    models, devices, queue, *_charts, errors, launcher_text, history, serving = gradio.predict(api_name="/status")
    assert "向量 embed: `demo:gte` · 自 since" in serving and "rollback" not in serving
    by_family = {row[0]: row for row in models["data"]}
    assert set(by_family) == {"embedding", "cross_encoder", "nlu"}
    assert by_family["embedding"][1] == "demo:gte" and by_family["embedding"][3] == 32
    assert all(row[4] == "cpu" for row in models["data"])
    assert "phase **ready**" in queue and "/ 1" in queue
    assert "CPU" in devices or "GPU" in devices
    assert "no launcher state" in launcher_text and history["data"] in ([], [["", "", "", ""]])
    footer = gradio.predict(api_name="/footer")
    assert "demo:gte" in footer and "demo:structbert" in footer and "dimension **32**" in footer


def test_direct_posts_cannot_skip_the_queue(server):
    import httpx

    r = httpx.post(server.url + "/gradio_api/run/embed", json={"data": ["一条", None, True, False]}, auth=server.auth)
    assert r.status_code == 404 and "join the queue" in r.text
