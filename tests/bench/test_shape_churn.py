"""bench.shape_churn: both settings run in their own child processes over the same shapes; the ladder's child meets
only rungs, the other the rows' own lengths; the drift is fitted after the first sample."""

from __future__ import annotations

import json

import pytest

from app.engine.shapes import bucket_length
from bench import shape_churn


def test_both_settings_run_the_same_forwards_and_only_the_ladders_meets_rungs_only(tmp_path, capsys):
    out = tmp_path / "churn.json"
    assert shape_churn.main(["--forwards", "30", "--every", "10", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    on, off = report["runs"]["on"], report["runs"]["off"]
    rungs = {bucket_length(n) for n in range(1, 513)}
    assert set(on["widths_met"]) <= rungs
    assert not set(off["widths_met"]) <= rungs
    assert max(off["widths_met"]) <= shape_churn.MAX_LENGTH
    assert on["distinct_shapes"] < off["distinct_shapes"] <= 30
    assert [s["forwards"] for s in on["samples"]] == [s["forwards"] for s in off["samples"]] == [10, 20, 30]
    assert all(s["rss_mib"] > 50 for s in on["samples"] + off["samples"])
    assert report["time_ratio_on_to_off"] == pytest.approx(on["ms_per_forward"] / off["ms_per_forward"])
    text = capsys.readouterr().out
    assert "time per forward, on / off" in text and "shapes met" in text


def test_the_drift_leaves_the_first_sample_out():
    samples = [{"forwards": 1000 * i, "rss_mib": rss} for i, rss in enumerate([100.0, 200.0, 201.0, 202.0], 1)]
    assert shape_churn.drift(samples) == pytest.approx(1.0)  # MiB per 1,000 forwards, the jump to 200 not counted
    assert shape_churn.drift(samples[:2]) is None


def test_the_shapes_are_the_same_list_for_both_settings_and_within_bounds():
    shapes = shape_churn.plan_shapes(500)
    assert shapes == shape_churn.plan_shapes(500)
    assert all(1 <= r <= shape_churn.MAX_ROWS and 4 <= n <= shape_churn.MAX_LENGTH for r, n in shapes)
    assert len(set(shapes)) > 400  # nearly every forward a new shape: the churn this bench is about
