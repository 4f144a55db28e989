"""bench.onednn_cost: both settings run in their own child process, and the table and JSON say what they measured."""

from __future__ import annotations

import json

from bench import onednn_cost


def test_both_settings_run_in_children_and_the_report_holds_every_round(tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert onednn_cost.main(["--width", "32", "--layers", "1", "--shapes", "4", "--passes", "1", "--rounds", "2",
                             "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "wenmo-onednn-cost/1" and 1 <= report["distinct_shapes"] <= 4
    times = report["ms_per_forward"]
    assert set(times) == {"0", "8192"} and all(len(v) == 2 for v in times.values())
    best = report["best_ms_per_forward"]
    assert best["0"] == min(report["ms_per_forward"]["0"]) > 0
    assert report["off_over_cached"] == best["0"] / best["8192"]
    assert f"cache off / cached: {report['off_over_cached']:.2f}×" in capsys.readouterr().out
    assert report["timed"] == "forward"


def test_the_limits_keep_to_small_shapes():
    assert onednn_cost.shape_choices(1, 32) == ((1,), (8, 16, 24, 32))
    assert onednn_cost.shape_choices(5, 50) == ((1, 2, 3, 4), (8, 16, 24, 32, 48))
    assert onednn_cost.shape_choices(1, 4) == ((1,), (8,))  # under the smallest rung: the smallest
    result = onednn_cost.child(16, 1, 12, 1, max_rows=2, max_length=16)
    assert 1 <= result["distinct_shapes"] <= 4 and result["ms_per_forward"] > 0


def test_gelu_only_times_the_activation_alone_and_says_so(tmp_path, capsys):
    out = tmp_path / "gelu.json"
    assert onednn_cost.main(["--width", "16", "--shapes", "3", "--passes", "1", "--rounds", "1", "--max-rows", "1",
                             "--max-length", "16", "--gelu-only", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["timed"] == "gelu" and report["max_rows"] == 1 and report["max_length"] == 16
    text = capsys.readouterr().out
    assert "GELU on (rows, length, 64)" in text and "µs per GELU call" in text
