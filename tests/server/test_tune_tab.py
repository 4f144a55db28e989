"""The 调优 Tune tab against a real `serve --demo` process, through gradio_client as the browser calls it: upload
train and held-out pairs, start a job (a real `python -m app tune` child of the server), poll it to the end, read
the before/after table, serve the result without a restart, and roll back; a second start while one runs is
refused with the tab's message, and a cancel stops a job between steps."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from server_harness import PASSWORD, USER, WenmoServer, basic_header

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tune"))

from synthetic import task_files  # noqa: E402

from app.web.ui.tune import CHART_POINTS  # noqa: E402

DEADLINE_S = 600  # a job on 2 busy CPUs; far above what it takes


@pytest.fixture(scope="module")
def tune_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunetab")
    server = WenmoServer(root / "state", [], env={"WENMO_MODEL_DIR": str(root / "models")})
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def ui(tune_server):
    return Client(tune_server.url + "/", headers=basic_header(USER, PASSWORD), verbose=False,
                  analytics_enabled=False)


def steps_done(progress: str) -> int:
    match = re.search(r"step (\d+)/", progress)
    return int(match.group(1)) if match else 0


def poll_until(ui: Client, ok, what: str) -> tuple:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        # (the timer's update, the progress text, the loss chart's data, the before/after table; the serve
        # button's update is not an API output)
        _timer, progress, losses, table = ui.predict(api_name="/tune_state")
        if ok(progress):
            return progress, losses, table
        assert time.monotonic() < deadline, f"{what}: {progress}"
        time.sleep(0.5)


def test_a_job_from_upload_to_serving_its_result(tune_server, ui, tmp_path):
    train, held_out = task_files(tmp_path, train=64, held_out=32, groups=2)
    ui.predict(handle_file(str(train)), handle_file(str(held_out)), "embed", 3, api_name="/tune_start")
    # One job at a time: the second start is refused with the job runner's message, the first goes on.
    with pytest.raises(AppError, match="a tune job is running"):
        ui.predict(handle_file(str(train)), handle_file(str(held_out)), "cross", 3, api_name="/tune_start")
    progress, losses, table = poll_until(ui, lambda p: "running" not in p, "the job never ended")
    assert losses["columns"] == ["step", "loss"]
    assert "完成 done" in progress and "step 3/3" in progress and "tuned" not in progress.split("结果")[0], progress
    assert [row[0] for row in losses["data"]] == [1, 2, 3] and all(row[1] > 0 for row in losses["data"])
    metrics = {row[0]: (row[1], row[2]) for row in table["data"]}
    assert set(metrics) == {"spearman", "roc_auc"}
    assert all(before != "—" and after != "—" for before, after in metrics.values())

    served = ui.predict(api_name="/tune_serve")
    assert "now serving: embed → `tuned/embed-" in served, served
    with tune_server.client() as c:
        models = {m["role"]: m for m in c.get("/v1/models").json()["data"]}
        assert models["embed"]["tuned"] and models["embed"]["name"].startswith("tuned/embed-")
        answer = c.post("/v1/embeddings", json={"input": ["今天天气很好"]})
        assert answer.status_code == 200 and answer.json()["model"] == models["embed"]["name"]
        back = c.post("/v1/models/embed/rollback")
        assert back.status_code == 200 and back.json()["name"] == "demo:gte", back.text


def test_a_cancel_stops_the_job_between_steps(tune_server, ui, tmp_path):
    train, held_out = task_files(tmp_path, train=64, held_out=32, groups=2)
    ui.predict(handle_file(str(train)), handle_file(str(held_out)), "cross", 100000, api_name="/tune_start")
    progress, losses, _table = poll_until(ui, lambda p: steps_done(p) >= 2 or "running" not in p,
                                          "training never began")
    assert "running" in progress, progress
    # The chart draws at most CHART_POINTS of a long curve (evenly spaced, the last step always).
    assert 2 <= len(losses["data"]) <= CHART_POINTS and losses["data"][-1][0] == steps_done(progress)
    _progress, *_ = ui.predict(api_name="/tune_cancel")
    progress, *_ = poll_until(ui, lambda p: "running" not in p, "the cancel was not obeyed")
    assert "已取消 cancelled" in progress, progress
    with pytest.raises(AppError, match="no finished tune job"):
        ui.predict(api_name="/tune_serve")
