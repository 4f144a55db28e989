"""`bench --size tiny` end to end, as a child process: the JSON's shape and internal consistency (not speeds),
and a valid PNG. One run, shared by the tests below (it starts one process per configuration)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXTS, NAIVE, NLU_PER_FAMILY = 12, 4, 1
BASELINES = ["naive", "library"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_STATE_DIR": str(tmp / "state"), "WENMO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
                "WENMO_DEVICE": "cpu"})
    out_json, out_png = tmp / "bench.json", tmp / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "bench", "--size", "tiny", "--texts", str(TEXTS), "--naive-texts",
         str(NAIVE), "--nlu-texts", str(NLU_PER_FAMILY), "--seed", "3", "--json", str(out_json), "--plot",
         str(out_png)],
        cwd=ROOT, env=env, capture_output=True, timeout=400)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(out_json.read_text(encoding="utf-8")), out_png, proc.stdout.decode()


def configs(report, family):
    return {c["name"]: c for c in report["families"][family]["configs"]}


def test_every_configuration_ran_on_the_same_inputs(bench):
    report, _, _ = bench
    assert report["schema"] == "wenmo-bench/1" and report["ok"] is True
    wenmo = ["wenmo-torch", "wenmo-deepspeed", "wenmo-torch-int8"]  # --dtype auto on the CPU adds int8
    assert report["plan"]["configs"] == wenmo and report["plan"]["device"] == "cpu"
    for family in ("embed", "cross"):
        got = configs(report, family)
        assert list(got) == BASELINES + wenmo
        assert got["naive"]["items"] == NAIVE and got["naive"]["subset"] is True
        assert all(got[n]["items"] == TEXTS and got[n]["subset"] is False for n in ["library", *wenmo])
        # Same inputs → the same real tokens and the same useful FLOPs, whatever the batching.
        full = [got[n] for n in ["library", *wenmo]]
        assert len({c["real_tokens"] for c in full}) == 1 and len({c["useful_flops"] for c in full}) == 1
        # …and the same outputs (fp32 everywhere on the CPU), int8 close to them.
        for name in ["naive", *wenmo]:
            assert got[name]["agreement"]["versus"] == "library"
            assert got[name]["agreement"]["probes"] == NAIVE
            assert got[name]["agreement"]["max_abs_diff"] < (5e-2 if name.endswith("int8") else 1e-4)
        assert got["wenmo-torch-int8"]["dtype"] == "int8"
        if family == "embed":
            assert got["wenmo-torch"]["agreement"]["min_cosine"] > 0.99999
            assert 0.97 < got["wenmo-torch-int8"]["agreement"]["min_cosine"] < 0.99999
    nlu = report["families"]["nlu"]
    if nlu.get("skipped"):
        assert "RexUniNLU" in nlu["skipped"]
    else:
        got = configs(report, "nlu")
        assert list(got) == wenmo
        for c in got.values():
            fams = c["task_families"]
            assert c["items"] == NLU_PER_FAMILY * len(fams) and len(fams) >= 5
            assert all(t["items_per_s"] > 0 and t["items"] == NLU_PER_FAMILY for t in fams.values())
            assert all(t["windows_per_request"] >= 1 for t in fams.values())
            assert fams["classification"]["windows_per_request"] == 1  # one window, one level
            assert c["useful_flops"] > 0 and c["matmul_fraction"] > 0


def test_rates_and_ratios_come_from_the_same_run(bench):
    report, _, _ = bench
    rates = {d: report["matmul"][d]["flops_per_s"] for d in ("fp32", "int8")}
    assert all(r > 0 for r in rates.values())
    for family in ("embed", "cross"):
        got = configs(report, family)
        for c in got.values():
            assert c["items_per_s"] > 0 and c["tokens_per_s"] > 0 and c["seconds"] > 0
            assert c["items_per_s"] == pytest.approx(c["items"] / c["seconds"])
            assert c["tokens_per_s"] == pytest.approx(c["real_tokens"] / c["seconds"])
            assert c["speedup_vs_naive"] == pytest.approx(c["items_per_s"] / got["naive"]["items_per_s"])
            assert c["speedup_vs_library"] == pytest.approx(c["items_per_s"] / got["library"]["items_per_s"])
            assert c["flops_per_s"] == pytest.approx(c["useful_flops"] / c["seconds"])
            assert c["matmul_fraction"] == pytest.approx(c["flops_per_s"] / rates[c["dtype"]])  # its own dtype's
            assert 0 < c["latency_p50_ms"] <= c["latency_p95_ms"]
            assert c["useful_flops"] <= c["executed_flops"] and 0 < c["padding_efficiency"] <= 1
            assert 0 < c["run_peak_rss_mib"] <= c["peak_rss_mib"]
            assert c["dtype"] == ("int8" if c["name"].endswith("int8") else "fp32")
            assert c["round_seconds"] == [c["seconds"]]
        assert got["naive"]["speedup_vs_naive"] == 1.0 and got["library"]["speedup_vs_library"] == 1.0
        # naive: one input per forward, padded to the model maximum.
        assert got["naive"]["batches"] == NAIVE and got["naive"]["padded_tokens"] == NAIVE * 512
        assert got["library"]["batches"] == 1  # 12 inputs, batches of 32
        assert report["families"][family]["padding_ceiling_vs_naive"] > 1
    checks = report["checks"]
    assert {c["config"] for c in checks} == {"wenmo-torch", "wenmo-deepspeed", "wenmo-torch-int8"} and len(checks) == 9
    embed = configs(report, "embed")
    for c in checks:
        if "naive" in c["target"]:
            assert c["value"] == embed[c["config"]]["speedup_vs_naive"] and c["pass"] == (c["value"] >= 10)


def test_token_distribution_is_stated(bench):
    report, _, stdout = bench
    w = report["workload"]
    assert w["seed"] == 3 and "query" in w["distribution"] and len(w["bands"]) == 3
    t = w["texts"]
    assert t["count"] == TEXTS and 3 <= t["min"] <= t["p50"] <= t["p95"] <= t["max"] <= 512
    assert sum(t["bands"].values()) == TEXTS
    assert w["naive_subset"]["count"] == NAIVE
    assert configs(report, "embed")["library"]["real_tokens"] == t["total"]
    assert configs(report, "embed")["naive"]["real_tokens"] == w["naive_subset"]["total"]
    assert w["pairs"]["count"] == TEXTS
    for text in ("tokens min", "naive", "wenmo-deepspeed", "×library", "issue targets", "GFLOP/s"):
        assert text in stdout


def test_chart_is_a_valid_png(bench):
    _, png, _ = bench
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 500 and height >= 400
    assert data.rstrip()[-8:-4] == b"IEND"


def test_forward_time_splits_the_wall_time_and_its_rate_is_at_least_the_walls(bench):
    report, _, text = bench
    for family in ("embed", "cross"):
        for c in configs(report, family).values():
            # The forwards run inside the timed pass: their sum is part of it, and their FLOP/s is at least the wall's.
            assert 0 < c["forward_seconds"] <= c["seconds"]
            assert c["forward_share"] == pytest.approx(c["forward_seconds"] / c["seconds"])
            assert c["forward_flops_per_s"] == pytest.approx(c["useful_flops"] / c["forward_seconds"])
            assert c["forward_matmul_fraction"] >= c["matmul_fraction"]
    assert "in fwd" in text and "fwd matmul" in text


def test_a_run_stopped_after_a_family_leaves_that_family_in_the_json(tmp_path) -> None:
    """A GPU lease's step limit stopped a bench in its second family (2026-11-27) and the first family's
    figures were lost with it: the JSON is now written after each family."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_STATE_DIR": str(tmp_path / "state"), "WENMO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
                "WENMO_DEVICE": "cpu"})
    out_json = tmp_path / "bench.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "bench", "--size", "tiny", "--texts", "6", "--naive-texts", "2",
         "--families", "embed,cross", "--engine", "torch", "--json", str(out_json)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not out_json.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert out_json.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no JSON"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert "embed" in report["partial"] and list(report["families"]) == ["embed"]
    assert [c["name"] for c in report["families"]["embed"]["configs"]][:2] == BASELINES
    assert all(c["ok"] and c["items_per_s"] > 0 for c in report["families"]["embed"]["configs"])
