"""`python -m bench.rejudge`: a soak's JSON judged again by today's rule, in a child process as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import prometheus

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def soak_report(tmp_path: Path) -> Path:
    """A flat server (600 MiB) sampled 40 times 1,000 requests apart, one sample caught mid-trim (+80 MiB), that
    the old least-squares rule could not call; a 200 MiB step at 900 s, inside the soak's own 600 s warm-up window."""
    rows = []
    for i in range(40):
        t = 300.0 + 30 * i
        rss = 600 + (200 if t >= 900 else 0) + (80 if i == 30 else 0) + (i % 3) * 0.5
        rows.append([t, {"wenmo_process_resident_memory_bytes": rss * MIB}, 1000 * i])
    old = prometheus.memory_verdict([tuple(r) for r in rows], 600, 10.0, 100, series="settled")
    old["rule"] = "the old rule"
    report = {"models": "demo", "created_utc": "2026-11-27T00:00:00Z",
              "soak": {"requests": 40000, "attempted_rps": 10.0, "memory": prometheus.memory_trend(rows),
                       "memory_samples": rows, "settled_samples": rows, "verdict": old}}
    path = tmp_path / "soak.json"
    path.write_text(json.dumps(report))
    return path


def rejudge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.rejudge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_a_later_warm_up_leaves_the_step_out_and_the_old_verdict_is_kept_beside_the_new(tmp_path):
    path = soak_report(tmp_path)
    out = tmp_path / "again.json"
    r = rejudge(str(path), "--warmup-s", "900", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    judged = json.loads(out.read_text())["soak"]
    g = judged["verdict"]["gauges"]["wenmo_process_resident_memory_bytes"]
    assert judged["verdict"]["verdict"] == "PASS" and abs(g["mib_per_1k_requests"]) < 0.05
    assert judged["verdict_before"]["rule"] == "the old rule" and "Theil–Sen" in judged["verdict"]["rule"]
    assert "rejudged:" in r.stdout and "soak memory: PASS" in r.stdout
    # From the soak's own warm-up the step is inside the window: not a pass, and the exit status says so.
    assert rejudge(str(path)).returncode == 1


def test_a_file_that_is_not_a_soak_report_is_named_with_what_is_wrong(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"plan": {}}))
    r = rejudge(str(bad))
    assert r.returncode == 2 and "is not a readable `wenmo soak --json` report" in r.stderr and "KeyError" in r.stderr


def test_until_judges_only_the_early_stretch_and_says_so(tmp_path):
    # The soak's first stretch alone (before the step at 900 s) is flat: judged up to 870 s it passes, as a short
    # soak of the same server would; the whole soak from the same start does not.
    path = soak_report(tmp_path)
    out = tmp_path / "early.json"
    r = rejudge(str(path), "--warmup-s", "300", "--until-s", "870", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    verdict = json.loads(out.read_text())["soak"]["verdict"]
    assert verdict["until_s"] == 870 and verdict["verdict"] == "PASS"
    g = verdict["gauges"]["wenmo_process_resident_memory_bytes"]
    assert g["points"] == 20 and g["requests_fitted"] == 19000, g
    assert "only the samples up to 870 s" in r.stdout
    assert rejudge(str(path), "--warmup-s", "300").returncode == 1


def test_a_window_that_ends_before_it_starts_is_refused_with_what_to_do(tmp_path):
    r = rejudge(str(soak_report(tmp_path)), "--warmup-s", "900", "--until-s", "600")
    assert r.returncode == 2
    assert "--until-s 600 is not after the warm-up's end (900 s)" in r.stderr and "later --until-s" in r.stderr
