"""What the 调优 Tune tab draws from a tune job's state (app/web/ui/tune.py): progress with the loss, the loss
curve's points, the before/after table, and when "serve this result" can be pressed."""

from __future__ import annotations

import pytest

from app.web.ui.tune import CHART_POINTS, loss_frame, metrics_frame, progress_markdown, view

RUNNING = {"job_id": "j1", "role": "embed", "status": "running", "step": 3, "steps": 12, "losses": [0.9, 0.7, 0.61234],
           "before": {"spearman": 0.01}, "after": None, "out": None, "report": None, "message": ""}


def test_progress_names_the_step_the_share_done_and_the_last_loss():
    assert progress_markdown(RUNNING) == "**训练中 running** · embed · step 3/12 (25 %) · loss **0.6123**"
    assert progress_markdown({"status": "idle"}).startswith("没有任务 (no tune job yet)")
    failed = {**RUNNING, "status": "failed", "message": "line 3: label 'x' is not 0/1 or a score in [0, 1]"}
    assert progress_markdown(failed).endswith("\n\nline 3: label 'x' is not 0/1 or a score in [0, 1]")
    done = {**RUNNING, "status": "done", "step": 12, "out": "/m/tuned/embed-20250101-120000"}
    assert progress_markdown(done).endswith("结果 result: `embed-20250101-120000`")


def test_the_loss_curve_and_the_before_after_table():
    assert loss_frame(RUNNING).to_dict("list") == {"step": [1, 2, 3], "loss": [0.9, 0.7, 0.61234]}
    assert loss_frame({"status": "idle"}).empty
    done = {**RUNNING, "before": {"accuracy": 0.5, "f1": 0.4}, "after": {"accuracy": 0.875, "f1": 0.9, "roc_auc": 0.95}}
    assert metrics_frame(done).values.tolist() == [["accuracy", "0.5000", "0.8750"], ["f1", "0.4000", "0.9000"],
                                                   ["roc_auc", "—", "0.9500"]]


def test_serve_this_result_is_pressable_only_for_a_finished_job_with_a_checkpoint():
    assert view(RUNNING)[3].interactive is False
    assert view({**RUNNING, "status": "done", "out": "/m/tuned/x"})[3].interactive is True
    assert view({**RUNNING, "status": "cancelled"})[3].interactive is False


@pytest.mark.parametrize("n", [0, 1, 3, CHART_POINTS, CHART_POINTS + 1, 1000, 100_001])
def test_the_loss_chart_takes_at_most_chart_points_evenly_spaced_steps_and_the_last(n):
    frame = loss_frame({"losses": [float(i) * 0.5 for i in range(n)]})
    steps = list(frame["step"])
    assert len(steps) == n if n <= CHART_POINTS else CHART_POINTS // 2 <= len(steps) <= CHART_POINTS
    if n:
        assert steps[-1] == n and len({b - a for a, b in zip(steps[:-1], steps[1:], strict=True)}) <= 1  # even
        assert list(frame["loss"]) == [(s - 1) * 0.5 for s in steps]  # each step's own loss
