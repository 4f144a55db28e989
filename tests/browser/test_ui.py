"""Each tab end to end in a real browser: what a person types, clicks, copies and downloads, and what the
page shows back (values compared with the HTTP API, an independent route to the same models)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

TEXTS = ["今天天气很好", "我喜欢看电影", "明天会下雨"]
HEAVY = ["北京天安门上海" * 20 + str(i) for i in range(2000)]  # ~2 s each on the tiny model

pytestmark = pytest.mark.browser


def rows(page, elem_id: str, at_least: int = 1, timeout_s: float = 15) -> list[list[str]]:
    """The cell texts of a gr.Dataframe's body rows, once it shows at least `at_least` of them (the table
    renders a moment after the other outputs of the same event)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = []
        for row in page.locator(f"#{elem_id} [role=row]").all():
            cells = [c.inner_text().strip() for c in row.locator("[role=gridcell], td").all()]
            if cells and any(cells):
                out.append(cells)
        if len(out) >= at_least or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def api_vectors(server, texts) -> np.ndarray:
    with server.client() as c:
        r = c.post("/v1/embeddings", json={"input": texts})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def toast_text(page) -> str:
    page.wait_for_selector("[data-testid=toast-text]")
    return " ".join(t.inner_text() for t in page.locator("[data-testid=toast-text]").all())


def test_every_page_has_the_demo_banner_tabs_and_footer(page, shot):
    assert "演示模式：随机权重，结果无意义" in page.locator("#demo-banner").inner_text()
    for name in ("相似度 Similarity", "向量 Vectors", "通用理解 NLU", "状态 Status"):
        assert page.get_by_role("tab", name=name).is_visible()
    page.wait_for_selector("#wm-footer :text('demo:gte')")
    footer = page.locator("#wm-footer").inner_text()
    assert "demo:gte" in footer and "demo:structbert" in footer and "demo:rex-uninlu" in footer
    assert "dimension 32" in footer
    shot("00-home")


def test_similarity_ranks_candidates_and_draws_chart_and_heatmap(page, server, shot, tmp_path):
    page.fill("#sim-source textarea", "今天天气很好")
    page.fill("#sim-candidates textarea", "\n".join(TEXTS[1:] + ["今天天气不错"]))
    page.click("#sim-run")
    page.wait_for_selector("#sim-summary :text('条候选')")
    table = rows(page, "sim-table", 3)
    assert [r[0] for r in table] == ["1", "2", "3"]
    cosines = [float(r[2]) for r in table]
    assert cosines == sorted(cosines, reverse=True)
    with server.client() as c:
        ref = c.post("/v1/similarity", json={"source": "今天天气很好", "candidates": TEXTS[1:] + ["今天天气不错"]})
    assert [r[1] for r in table] == [x["text"] for x in ref.json()["results"]]
    assert page.locator("#sim-bars svg").count() >= 1  # the bar chart rendered
    heat = page.locator("#sim-heatmap table")
    assert heat.locator("tbody tr").count() == 4 and heat.locator("tbody td").count() == 16
    shot("10-similarity")

    # Candidates from an uploaded CSV, reranked by the cross-encoder.
    f = tmp_path / "candidates.csv"
    f.write_text("text\n今天天气不错\n我喜欢看电影\n", encoding="utf-8")
    page.set_input_files("#sim-upload input[type=file]", str(f))
    page.locator("#sim-rerank input").check()
    page.click("#sim-run")
    page.wait_for_selector("#sim-summary :text('candidates.csv')")
    page.wait_for_function("() => !document.querySelector('#sim-table').innerText.includes('明天会下雨')")
    table = rows(page, "sim-table", 2)
    probs = [float(r[3]) for r in table]
    assert sorted(r[1] for r in table) == ["今天天气不错", "我喜欢看电影"]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    shot("11-similarity-rerank-csv")


def test_vectors_copy_button_and_download_give_the_vectors(page, server, shot):
    page.get_by_role("tab", name="向量 Vectors").click()
    page.fill("#vec-texts textarea", "\n".join(TEXTS))
    page.click("#vec-run")
    page.wait_for_selector("#vec-summary :text('条文本')")
    want = api_vectors(server, TEXTS)
    preview = rows(page, "vec-preview", 3)
    assert [r[1] for r in preview] == TEXTS and [r[2] for r in preview] == ["32"] * 3
    np.testing.assert_allclose([[float(x) for x in r[4:14]] for r in preview], want[:, :10], atol=1e-5)

    page.locator("#vec-json button[aria-label='Copy']").click()
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert [c["dimension"] for c in copied] == [32, 32, 32]
    np.testing.assert_array_equal(np.array([c["vector"] for c in copied], dtype=np.float32), want)

    with page.expect_download() as info:
        page.click("#vec-dl-jsonl")
    download = info.value
    assert download.suggested_filename == "vectors.jsonl"
    lines = [json.loads(x) for x in open(download.path(), encoding="utf-8")]
    assert [x["text"] for x in lines] == TEXTS
    np.testing.assert_allclose([x["vector"] for x in lines], want, atol=1e-7)
    with page.expect_download() as info:
        page.click("#vec-dl-npy")
    np.testing.assert_array_equal(np.load(info.value.path()), want)
    shot("20-vectors")


def test_vectors_bad_lines_are_named_and_nothing_is_lost(page, shot, tmp_path):
    page.get_by_role("tab", name="向量 Vectors").click()
    page.fill("#vec-texts textarea", "第一行\n\n第三行")
    page.click("#vec-run")
    message = toast_text(page)
    assert "第 2 行为空" in message and "跳过空行" in message
    assert page.input_value("#vec-texts textarea") == "第一行\n\n第三行"  # the input is still there to fix
    shot("21-vectors-bad-line", full_page=False)
    page.locator("#vec-skip-blank input").check()
    page.click("#vec-run")
    page.wait_for_selector("#vec-summary :text('条文本')")
    assert [r[1] for r in rows(page, "vec-preview", 2)] == ["第一行", "第三行"]


def test_nlu_presets_schema_validation_and_results(page, shot):
    page.get_by_role("tab", name="通用理解 NLU").click()
    page.wait_for_selector("#nlu-verdict :text('schema 有效')")
    # NER is the first preset: run it and look at the highlights and the table.
    page.click("#nlu-run")
    page.wait_for_selector("#nlu-summary :text('extract')")
    table = rows(page, "nlu-table")
    assert table, "the tiny random model finds spans in the NER example"
    text = page.input_value("#nlu-text textarea")
    highlighted = page.locator("#nlu-highlight").inner_text()
    assert any(label in highlighted for label in ("人物", "地理位置", "组织机构"))
    for r in table:
        start, end = json.loads(r[2])
        assert 0 <= start < end <= len(text)
    shot("30-nlu-ner")

    # A preset fills schema, text and task.
    page.locator("#nlu-preset input").click()
    page.get_by_role("option", name="情感分类 Sentiment classification").click()
    page.wait_for_selector("#nlu-schema :text('正向情感')")
    assert "看不下去" in page.input_value("#nlu-text textarea")
    assert page.locator("#nlu-task input[type=radio]:checked").get_attribute("value") == "classify"
    page.click("#nlu-run")
    page.wait_for_selector("#nlu-summary :text('classify')")
    page.locator("#nlu-raw button[aria-label='Copy']").click()
    raw = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert raw["task"] == "classify" and raw["output"][0][0]["type"] in ("正向情感", "负向情感")
    shot("31-nlu-classify")

    # The schema editor says what is wrong while typing.
    page.locator("#nlu-schema .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text('{"人物": 1}')
    page.wait_for_selector("#nlu-verdict :text('✗')")
    assert 'schema["人物"]: the value is a number' in page.locator("#nlu-verdict").inner_text()
    shot("32-nlu-invalid-schema")


def test_status_tab_shows_models_device_and_queue(page, shot):
    page.get_by_role("tab", name="状态 Status").click()
    page.wait_for_selector("#status-queue :text('ready')")
    models = rows(page, "status-models", 3)
    assert {r[1] for r in models} == {"demo:gte", "demo:structbert", "demo:rex-uninlu"}
    assert {r[4] for r in models} == {"cpu"}
    assert "GPU" in page.locator("#status-devices").inner_text()
    assert "/ 1" in page.locator("#status-queue").inner_text()
    assert "launcher" in page.locator("#status-launcher").inner_text()
    shot("40-status")


def test_status_tab_draws_the_memory_and_request_charts(page, server, shot, tmp_path):
    with server.client() as c:
        for _ in range(5):
            assert c.post("/v1/embeddings", json={"input": TEXTS}).status_code == 200
    page.get_by_role("tab", name="状态 Status").click()
    page.wait_for_selector("#status-traffic :text('last minute')")
    assert "no launcher is running this app" in page.locator("#status-memory").inner_text()
    for chart in ("status-memory-chart", "status-traffic-chart"):
        img = page.locator(f"#{chart} img")
        img.wait_for()
        # Drawn, not a broken or empty image: the browser decoded a picture of the figure's size.
        size = img.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
        assert size[0] and size[1] == 800 and size[2] in (272, 448), size
        box = img.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        path = tmp_path / f"{chart}.png"
        img.screenshot(path=str(path))
        from PIL import Image

        low, high = Image.open(path).convert("L").getextrema()
        assert high - low > 100, f"{chart} looks blank"
    shot("41-status-charts")


def test_busy_is_a_toast_not_a_hang(page, server, shot):
    """While HTTP clients hold the one slot and the queue, a click is told to retry, at once."""
    page.get_by_role("tab", name="向量 Vectors").click()
    done: list[int] = []

    def hold() -> None:
        with server.client() as c:
            done.append(c.post("/v1/embeddings", json={"input": HEAVY}).status_code)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    with server.client() as c:
        deadline = time.monotonic() + 10
        while "wenmo_queue_depth 2" not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the HTTP requests never filled the queue"
            time.sleep(0.02)
    page.fill("#vec-texts textarea", "一条")
    page.click("#vec-run")
    message = toast_text(page)
    finished_before_toast = len(done)
    # At once: the toast came while the requests ahead of the click were still running (a click that waited
    # in line would be answered only after all three).
    assert "服务繁忙" in message and finished_before_toast < 3
    shot("50-busy-toast", full_page=False)
    for t in threads:
        t.join(timeout=60)
    assert done == [200, 200, 200]
