"""The load generator against a stub server whose behaviour is known: stage logic, safe concurrency,
busy-versus-error counting, the memory trend and the overhead figure, checked with values. Baseline, ramp and
mixed run through locust (bench/locustfile.py, a subprocess); the soak through the httpx client."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_stub import MIB, StubServer

from app.errors import InputError
from bench.loadtest import LoadOptions, LoadTester, run

ROOT = Path(__file__).resolve().parents[2]
AUTH = ("u", "p")


def opts(url: str, **kw) -> LoadOptions:
    base = dict(url=url, stages=("baseline",), users=1, baseline_requests=10, baseline_s=20, step_s=20,
                step_requests=20, soak_s=2, mixed_s=20, mixed_requests=20, request_timeout_s=10,
                ready_timeout_s=10, metrics_interval_s=0.2, model="stub")
    base.update(kw)
    return LoadOptions(**base)


def test_ramp_finds_the_safe_concurrency():
    # One request at a time, 100 ms each: with n users a request waits for the n - 1 ahead of it, so its
    # latency is at least ≈ n × 100 ms (100, 200, 400 ms). A loaded machine only adds to that, so only these
    # floors are asserted: the step of 4 users is over the 300 ms target whatever the machine, and whether
    # the steps of 1 and 2 pass is read from their own measured p95 (on an idle machine: pass, pass).
    with StubServer(service_s=0.1) as stub:
        r = run(opts(stub.url, stages=("ramp",), users=4, step_requests=12, p95_target_ms=300), AUTH)
    steps = r["stages"]["ramp"]["steps"]
    assert [s["users"] for s in steps] == [1, 2, 4]
    assert [s["requests"] for s in steps] == [12, 12, 12]  # the request cap, exactly
    assert all(s["ok"] == 12 and s["busy"] == 0 and s["errors"] == 0 for s in steps)
    p50 = [s["latency_p50_ms"] for s in steps]
    assert p50[0] >= 95 and p50[1] >= 190 and p50[2] >= 380
    assert all(s["latency_p95_ms"] >= s["latency_p50_ms"] for s in steps)
    assert [s["passes"] for s in steps] == [s["latency_p95_ms"] <= 300 for s in steps]
    assert steps[2]["passes"] is False
    leading = [s["users"] for s in steps[: [s["passes"] for s in steps].index(False)]]
    assert r["stages"]["ramp"]["safe_concurrency"] == (leading[-1] if leading else None)
    # Throughput is bounded by the one-at-a-time server: at most 10 per second whatever the users.
    assert all(0 < s["throughput_rps"] <= 10.5 for s in steps)
    assert all(s["throughput_rps"] == pytest.approx(12 / s["elapsed_s"]) for s in steps)


def test_ramp_stops_at_the_first_unsafe_step():
    # The safe concurrency end to end, independent of the machine's speed: a generous latency target that
    # every step meets, and one busy answer (embedding number 30, in the step of 4 users: 25–36) that makes
    # that step unsafe.
    with StubServer(service_s=0.01, busy_every=30) as stub:
        r = run(opts(stub.url, stages=("ramp",), users=4, step_requests=12, p95_target_ms=60_000), AUTH)
    steps = r["stages"]["ramp"]["steps"]
    assert [(s["users"], s["ok"], s["busy"]) for s in steps] == [(1, 12, 0), (2, 12, 0), (4, 11, 1)]
    assert [s["passes"] for s in steps] == [True, True, False]
    assert r["stages"]["ramp"]["safe_concurrency"] == 2


def test_busy_answers_are_counted_apart_from_errors():
    with StubServer(busy_every=4) as stub:  # embeddings number 4, 8, 12, … answer 503 + Retry-After: 0
        r = run(opts(stub.url, baseline_requests=20), AUTH)
    b = r["stages"]["baseline"]
    assert (b["requests"], b["ok"], b["busy"], b["errors"]) == (20, 15, 5, 0)
    assert b["busy_statuses"] == {"503": 5} and b["busy_with_retry_after"] == 5
    assert b["error_reasons"] == {}


def test_busy_429_fails_a_ramp_step_and_errors_are_reasons():
    with StubServer(busy_every=5, busy_status=429) as stub:
        r = run(opts(stub.url, stages=("ramp", "mixed"), users=2, step_requests=10, p95_target_ms=10_000,
                     soak_users=2, mix="vectors=1,nlu=1"), AUTH)
    steps = r["stages"]["ramp"]["steps"]
    assert [s["busy"] for s in steps] == [2, 2]  # embeddings 5, 10 | 15, 20
    assert all(s["busy_statuses"] == {"429": 2} for s in steps)
    assert r["stages"]["ramp"]["safe_concurrency"] is None  # busy answers make a step unsafe
    mixed = r["stages"]["mixed"]
    nlu, vec = mixed["by_kind"]["nlu"], mixed["by_kind"]["vectors"]
    assert nlu["requests"] > 0 and nlu["errors"] == nlu["requests"] and nlu["ok"] == 0
    assert nlu["error_reasons"] == {"HTTP 500": nlu["requests"]}
    assert vec["errors"] == 0 and vec["ok"] + vec["busy"] == vec["requests"]
    assert mixed["requests"] == 20 and mixed["errors"] == nlu["requests"]
    assert mixed["busy"] == vec["busy"]
    assert set(mixed["mix"]) == {"vectors", "nlu"} and abs(sum(mixed["mix"].values()) - 1) < 1e-9
    assert any("HTTP 500" in e for e in r["error_samples"])


def test_soak_watches_memory_and_judges_its_rate():
    with StubServer(leak_mib=32) as stub:
        r = run(opts(stub.url, stages=("soak",), soak_users=2, soak_s=1.5, soak_requests=100_000, soak_mix="vectors=1",
                     soak_warmup_s=0.3, settle_every_s=0), AUTH)
        scrapes = stub.scrapes
    soak = r["stages"]["soak"]
    assert soak["users"] == 2 and soak["ok"] > 0 and soak["errors"] == 0 and soak["mix"] == {"vectors": 1.0}
    assert len(soak["memory_samples"]) == scrapes >= 5
    counts = [n for _t, _g, n in soak["memory_samples"]]
    assert counts == sorted(counts) and counts[-1] == soak["requests"]  # requests answered at each sample
    rss = soak["memory"]["process_resident_memory_bytes"]
    gpu = soak["memory"]['wenmo_gpu_memory_used_bytes{device="0"}']
    assert rss["unit"] == "MiB" and rss["first"] == 300 and rss["last"] == 300 + 32 * (scrapes - 1)
    assert rss["slope_per_min"] > 0 and gpu["first"] == gpu["last"] == 2048 and gpu["slope_per_min"] == 0
    assert "wenmo_http_requests_total" not in str(soak["memory"])  # only memory gauges
    v = soak["verdict"]
    assert soak["settled_samples"] == [] and soak["paused_s"] == 0 and v["series"] == "under load"
    assert v["warmup_s"] == 0.3 and v["budget_mib_per_day"] == 100 and soak["pauses"] == []
    after = [(t, n) for t, _g, n in soak["memory_samples"] if t >= 0.3]  # the fitted window's own rate
    assert v["rate_rps"] == pytest.approx((after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0]))
    assert v["gauges"]["process_resident_memory_bytes"]["pass"] is False  # 32 MiB a scrape: far over a day's 100
    assert v["gauges"]["process_resident_memory_bytes"]["mib_per_1k_requests"] > 0
    assert v["gauges"]['wenmo_gpu_memory_used_bytes{device="0"}']["pass"] is True and v["pass"] is False


def test_the_verdict_fits_settled_samples_taken_with_nothing_in_flight():
    # Memory under load swings by 100 MiB per request in flight; nothing is kept. The settled samples (users
    # paused, in-flight requests finished) see only what is kept: flat, so the verdict passes, while the samples
    # under load jump around.
    with StubServer(working_mib=100, service_s=0.01) as stub:
        r = run(opts(stub.url, stages=("soak",), soak_users=3, soak_s=3.0, soak_requests=10**9, soak_mix="vectors=1",
                     soak_warmup_s=0.5, metrics_interval_s=0.05, settle_every_s=0.4, settle_s=0.05), AUTH)
        at_scrapes = list(stub.in_flight_at_scrapes)
    soak = r["stages"]["soak"]
    settled = soak["settled_samples"]
    rss = [g["process_resident_memory_bytes"] / 2**20 for _t, g, _n in settled]
    assert len(settled) >= 5 and rss == [300.0] * len(settled)  # nothing in flight at any settled sample
    loaded = {g["process_resident_memory_bytes"] / 2**20 for _t, g, _n in soak["memory_samples"]}
    assert max(at_scrapes) > 0 and max(loaded) > 300  # under load the stub had work in flight when scraped
    counts = [n for _t, _g, n in settled]
    assert counts == sorted(counts) and counts[-1] == soak["requests"]  # the last one after the load
    v = soak["verdict"]
    assert v["series"] == "settled" and "settled" in v["rule"]
    g = v["gauges"]["process_resident_memory_bytes"]
    assert g["mib_per_1k_requests"] == 0 and g["pass"] is True and v["pass"] is True
    assert g["points"] == sum(t >= 0.5 for t, _g, _n in settled)
    # The rate is the rate under load: the pauses are left out of it.
    assert 0 < soak["paused_s"] < soak["elapsed_s"]
    assert soak["rate_under_load_rps"] == pytest.approx(soak["requests"] / (soak["elapsed_s"] - soak["paused_s"]))
    assert soak["rate_under_load_rps"] > soak["attempted_rps"]
    # The verdict's rate: requests between the first and last fitted sample over the loaded seconds between them.
    fitted = [(t, n) for t, _g, n in settled if t >= 0.5]
    window = fitted[-1][0] - fitted[0][0]
    paused = sum(max(0.0, min(b, fitted[-1][0]) - max(a, fitted[0][0])) for a, b in soak["pauses"])
    assert 0 < paused < window and len(soak["pauses"]) == len(settled)  # one pause per settled sample
    assert v["rate_rps"] == pytest.approx((fitted[-1][1] - fitted[0][1]) / (window - paused))


def test_settled_samples_still_see_memory_that_is_kept():
    with StubServer(leak_mib=8) as stub:
        r = run(opts(stub.url, stages=("soak",), soak_users=2, soak_s=2.0, soak_requests=10**9, soak_mix="vectors=1",
                     soak_warmup_s=0.2, metrics_interval_s=0.1, settle_every_s=0.3, settle_s=0.05), AUTH)
    soak = r["stages"]["soak"]
    rss = [g["process_resident_memory_bytes"] for _t, g, _n in soak["settled_samples"]]
    assert rss == sorted(rss) and rss[-1] > rss[0]
    v = soak["verdict"]
    assert v["series"] == "settled" and v["gauges"]["process_resident_memory_bytes"]["pass"] is False


def test_overhead_is_http_minus_engine_time():
    with StubServer(service_s=0.02) as stub:
        r = run(opts(stub.url, baseline_requests=15), AUTH)
    ov = r["overhead"]
    assert ov["requests"] == 15
    # The stub sleeps 20 ms under its lock: at least that (a busy machine may oversleep, so no ceiling), and
    # never more than the HTTP time it is part of.
    assert 19 <= ov["engine_p50_ms"] <= ov["http_p50_ms"]
    assert ov["overhead_ms"] == pytest.approx(ov["http_p50_ms"] - ov["engine_p50_ms"])
    assert ov["overhead_ms"] >= 0 and ov["target_met"] == (ov["overhead_ms"] <= 15)


def test_overhead_without_engine_header_is_not_available():
    with StubServer(engine_header=False) as stub:
        r = run(opts(stub.url, baseline_requests=3), AUTH)
    assert r["overhead"]["overhead_ms"] is None and r["overhead"]["target_met"] is None
    assert "X-Wenmo-Engine-Ms" in r["overhead"]["note"]


def test_every_loop_stops_by_itself():
    # The soak ends at its own deadline (it ran its second; the request cap is out of reach), well before
    # the stage's outer bound (deadline + one request timeout + 5 s) would have had to cancel its users.
    with StubServer(service_s=0.005) as stub:
        o = opts(stub.url, stages=("soak",), soak_users=3, soak_s=1.0, soak_requests=10**9)
        t0 = time.perf_counter()
        r = run(o, AUTH)
        elapsed = time.perf_counter() - t0
    soak = r["stages"]["soak"]
    assert 1.0 <= soak["elapsed_s"] <= elapsed < o.soak_s + o.request_timeout_s
    assert 0 < soak["requests"] < 10**9


def test_waits_for_readiness_and_refuses_bad_credentials():
    with StubServer(ready_after_polls=2) as stub:
        r = run(opts(stub.url, baseline_requests=2), AUTH)
        # Three polls by loadtest's own wait, one by the locustfile's check before its run.
        assert stub.ready_polls == 4 and r["stages"]["baseline"]["ok"] == 2
        with pytest.raises(InputError, match="WENMO_AUTH"):
            run(opts(stub.url), ("u", "wrong"))


def test_only_loopback_without_allow_remote():
    with pytest.raises(InputError, match="--allow-remote"):
        LoadTester(opts("http://10.1.2.3:7860"), AUTH)
    with pytest.raises(InputError, match="http"):
        LoadTester(opts("ftp://127.0.0.1:7860"), AUTH)
    for url in ("http://127.0.0.1:1", "http://localhost:1/", "http://[::1]:7860"):
        assert LoadTester(opts(url), AUTH).url == url.rstrip("/")
    assert LoadTester(opts("http://10.1.2.3:7860", allow_remote=True), AUTH).url == "http://10.1.2.3:7860"


def test_cli_reads_credentials_from_the_environment_and_writes_json_and_png(tmp_path):
    with StubServer(service_s=0.01, busy_every=7, leak_mib=1) as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
        env.update({"WENMO_AUTH": "u:p", "WENMO_LOG_LEVEL": "WARNING", "WENMO_STATE_DIR": str(tmp_path),
                    "PYTHONPATH": str(ROOT)})
        out_json, out_png = tmp_path / "lt.json", tmp_path / "lt.png"
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "loadtest", "--url", stub.url, "--users", "2", "--step-s", "5",
             "--step-requests", "14", "--baseline-requests", "14", "--soak-s", "1", "--mixed-s", "1",
             "--metrics-interval-s", "0.25", "--p95-target-ms", "5000", "--json", str(out_json),
             "--plot", str(out_png)],
            cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    r = json.loads(out_json.read_text(encoding="utf-8"))
    assert r["auth"].startswith("basic") and set(r["stages"]) == {"baseline", "ramp", "soak", "mixed"}
    assert r["stages"]["baseline"]["busy"] == 2  # embeddings 7 and 14 of 14
    assert [s["users"] for s in r["stages"]["ramp"]["steps"]] == [1, 2]
    text = proc.stdout.decode()
    assert "safe concurrency" in text and "server overhead" in text and "process_resident_memory_bytes" in text
    data = out_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100


def test_outer_bound_cancels_a_stuck_user():
    # The server would answer only after 30 s: the stage still ends (at its deadline plus one request
    # timeout), before any answer came, and every request is an error ("timeout").
    with StubServer(service_s=30.0) as stub:
        tester = LoadTester(opts(stub.url, request_timeout_s=0.3), AUTH)

        async def go():
            async with tester.client(2) as client:
                return await tester.run_stage(client, 2, 0.5, 100, {"vectors": 1}, 0)

        outcomes, elapsed = asyncio.run(go())
        answered = stub.answered
    assert answered == 0 and elapsed < stub.service_s
    assert outcomes and all(o.category == "error" and o.detail == "timeout" for o in outcomes)
    assert MIB == 1 << 20


def test_locust_runs_in_its_own_process_never_in_this_one():
    # Locust patches the whole process for gevent on import; loadtest must leave that to its child.
    with StubServer() as stub:
        r = run(opts(stub.url, stages=("baseline", "mixed"), baseline_requests=3, soak_users=1, mixed_requests=4,
                     mix="vectors=1"), AUTH)
    assert r["stages"]["baseline"]["ok"] == 3 and r["stages"]["mixed"]["requests"] == 4
    assert r["load_generator"]["baseline, ramp, mixed"].startswith("locust ")
    assert "locust" not in sys.modules and "gevent" not in sys.modules
