"""bench.batching_inprocess on the tiny GTE: both modes answer every call, with the single-request vectors."""

from __future__ import annotations

import json
from pathlib import Path

from bench.batching_inprocess import main


def test_on_and_off_answer_every_call_with_the_idle_vectors(tiny_dirs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["--model", str(tiny_dirs["embed"]), "--device", "cpu", "--users", "4", "--requests", "5",
                 "--compare-texts", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for mode in ("on", "off"):
        r = report[mode]
        assert r["mode"] == mode and r["answered"] == 20 and r["errors"] == 0 and r["texts_per_s"] > 0
        assert r["min_cosine_vs_idle"] >= 0.99999
        assert r["latency_p50_ms"] <= r["latency_p95_ms"] <= r["latency_p99_ms"]
    assert report["ratio_texts_per_s"] == report["on"]["texts_per_s"] / report["off"]["texts_per_s"]
    checks = {c["target"]: c["pass"] for c in report["checks"]}
    assert checks["every request answered (no errors, no busy answers), both modes"] is True
    assert any(t.startswith("texts/s on ≥ 1.5× off (CPU)") for t in checks)
    assert "texts/s" in capsys.readouterr().out
