"""bench/locustfile.py under plain `python -m locust -f`: headless against the stub server (locust's statistics
equal what the stub served), one master with one worker, credentials from WENMO_AUTH, the loopback-only default
and the plan's variables; and bench/locustrun.py's pure pieces. Locust runs in child processes only: importing it
here would patch pytest's process for gevent."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_stub import StubServer

from app.errors import InputError
from bench.locustrun import LocustRun, histogram_percentile, plan_from_env, read_run, summary

ROOT = Path(__file__).resolve().parents[2]
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py")]


def env(**plan: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    out.update({"WENMO_AUTH": "u:p", "PYTHONPATH": str(ROOT)})
    out.update({f"WENMO_LOCUST_{k.upper()}": v for k, v in plan.items()})
    return out


def headless(url: str, out: Path, environ: dict[str, str], *extra: str, timeout: float = 60):
    environ = {**environ, "WENMO_LOCUST_OUT": str(out)}
    return subprocess.run(
        [*LOCUST, "--headless", "--host", url, "--csv", str(out / "locust"), "--json-file", str(out / "locust"),
         "--only-summary", "--exit-code-on-error", "0", "--loglevel", "WARNING", *extra],
        cwd=ROOT, env=environ, capture_output=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rows(run: LocustRun, path_kind: str) -> int:
    return sum(e["num_requests"] for name, e in run.stats.items() if name.split()[1] == path_kind)


def test_headless_statistics_match_what_the_server_served(tmp_path):
    plan = dict(stages="baseline,ramp,mixed", users="2", baseline_s="20", baseline_requests="9", step_s="20",
                step_requests="10", mixed_s="20", mixed_requests="16", mixed_users="2", mix="vectors=1,nlu=1")
    with StubServer(service_s=0.01, busy_every=6) as stub:
        proc = headless(stub.url, tmp_path, env(**plan))
        served = dict(stub.served)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    run = read_run(tmp_path)
    # Every stage ended at its cap (far before its 20 s): each request the stub served is in locust's statistics.
    assert [(s["label"], s["users"], s["ended"]) for s in run.timeline] == [
        ("baseline", 1, "cap"), ("ramp-1", 1, "cap"), ("ramp-2", 2, "cap"), ("mixed", 2, "cap")]
    assert rows(run, "vectors_short") + rows(run, "vectors") == served["/v1/embeddings"]
    assert rows(run, "nlu") == served.get("/v1/nlu", 0) > 0
    b = summary(run, run.timeline[0], ["vectors_short"])
    assert (b["requests"], b["ok"], b["busy"], b["errors"]) == (9, 8, 1, 0)  # embedding 6 answered 503
    assert b["busy_statuses"] == {"503": 1} and b["busy_with_retry_after"] == 1
    for step in run.timeline[1:3]:
        s = summary(run, step, ["vectors"])
        assert s["requests"] == 10 and s["errors"] == 0 and s["ok"] + s["busy"] == 10
    mixed = summary(run, run.timeline[3], ["vectors", "nlu"])
    nlu = summary(run, run.timeline[3], ["nlu"])
    assert mixed["requests"] == 16 and nlu["errors"] == nlu["requests"] == served["/v1/nlu"]
    assert nlu["error_reasons"] == {"HTTP 500": nlu["requests"]}
    # An engine-time record for every answered embedding, with the stub's time under its lock (≥ 10 ms).
    engine = [r for r in run.records if r["type"] == "engine"]
    answered = sum(summary(run, st, ["vectors", "vectors_short"])["ok"] for st in run.timeline)
    assert len(engine) == answered and all(10 <= r["engine_ms"] <= r["http_ms"] for r in engine)
    assert any(r["type"] == "sample" and "HTTP 500" in r["text"] for r in run.records)


def test_master_and_worker(tmp_path):
    port = free_port()
    plan = env(stages="baseline,ramp", baseline_s="3", ramp_steps="2", step_s="3")
    with StubServer(service_s=0.01) as stub:
        worker = subprocess.Popen(
            [*LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "WARNING"],
            cwd=ROOT, env={**plan, "WENMO_LOCUST_OUT": str(tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            master = headless(stub.url, tmp_path, plan, "--master", "--master-bind-host", "127.0.0.1",
                              "--master-bind-port", str(port), "--expect-workers", "1", timeout=90)
            worker_out = worker.communicate(timeout=30)[0].decode()
        finally:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            worker.wait(timeout=10)
        served = stub.served["/v1/embeddings"]
    assert master.returncode == 0, master.stderr.decode()[-2000:] + worker_out[-2000:]
    run = read_run(tmp_path)
    assert [(s["label"], s["users"]) for s in run.timeline] == [("baseline", 1), ("ramp-2", 2)]
    base, ramp = (summary(run, s, ["vectors_short", "vectors"]) for s in run.timeline)
    # The worker learnt each stage from the master's message: its requests are named after both stages.
    assert base["ok"] > 0 and ramp["ok"] > 0 and base["errors"] == ramp["errors"] == 0
    recorded = base["requests"] + ramp["requests"]
    # The test ends by time: the requests in flight then (at most one per user) were served but not reported.
    assert 0 <= served - recorded <= 2
    # The worker wrote its engine records into the same directory.
    assert len([r for r in run.records if r["type"] == "engine"]) == base["ok"] + ramp["ok"]


def test_wrong_credentials_and_remote_hosts_are_refused_with_a_message(tmp_path):
    with StubServer() as stub:
        wrong = headless(stub.url, tmp_path, {**env(stages="baseline"), "WENMO_AUTH": "u:wrong"})
        assert stub.served == {}
    assert wrong.returncode == 2 and "WENMO_AUTH=user:password" in wrong.stderr.decode()
    remote = headless("http://10.1.2.3:7860", tmp_path, env(stages="baseline"))
    assert remote.returncode == 2
    message = remote.stderr.decode()
    assert "not a loopback address" in message and "WENMO_LOCUST_ALLOW_REMOTE=1" in message
    bad = headless("http://127.0.0.1:1", tmp_path, env(stages="baseline,warmup"))
    assert bad.returncode == 2 and "WENMO_LOCUST_STAGES: warmup" in bad.stderr.decode()


def test_plan_from_env():
    plan = plan_from_env({"WENMO_LOCUST_USERS": "5", "WENMO_LOCUST_STEP_REQUESTS": "7",
                          "WENMO_LOCUST_MIX": "vectors=3,nlu=1"})
    assert [(s.label, s.users, s.seconds, s.cap) for s in plan] == [
        ("baseline", 1, 30.0, 0), ("ramp-1", 1, 15.0, 7), ("ramp-2", 2, 15.0, 7), ("ramp-4", 4, 15.0, 7),
        ("ramp-5", 5, 15.0, 7), ("soak", 2, 60.0, 0), ("mixed", 2, 30.0, 0)]
    assert dict(plan[-1].mix) == {"vectors": 0.75, "nlu": 0.25} and plan[0].mix == (("vectors_short", 1.0),)
    assert [s.users for s in plan_from_env({"WENMO_LOCUST_STAGES": "ramp", "WENMO_LOCUST_RAMP_STEPS": "3,1"})] == [1, 3]
    for key, value, message in [("STAGES", "ramp,warmup", "warmup"), ("USERS", "0", "≥ 1"),
                                ("STEP_S", "soon", "number"), ("MIX", "vectors=x", "WENMO_LOCUST_MIX"),
                                ("RAMP_STEPS", "1,two", "user counts")]:
        with pytest.raises(InputError, match=message):
            plan_from_env({f"WENMO_LOCUST_{key}": value})


def test_histogram_percentile_is_locusts():
    # The same figures as locust's own function (run in a child: importing locust here would patch pytest).
    hist = {1: 5, 2: 3, 150: 1, 300: 1}
    percents = (0.5, 0.8, 0.9, 0.95, 0.99)
    code = ("import json, sys; from locust.stats import calculate_response_time_percentile as p; "
            f"print(json.dumps([p({hist!r}, 10, q) for q in {percents!r}]))")
    theirs = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert [histogram_percentile(hist, 10, q) for q in percents] == theirs == [2, 150, 300, 300, 300]
    assert histogram_percentile({}, 0, 0.5) is None


def test_summary_counts_busy_and_errors_apart_and_times_the_stage():
    entry = {"last_request_timestamp": 104.0, "max_response_time": 40.0, "num_requests": 4,
             "response_times": {"10": 3, "40": 1}}
    run = LocustRun(
        stats={"ramp-2 vectors": entry,
               "ramp-2 vectors busy": {**entry, "num_requests": 2, "response_times": {"1": 2}},
               "ramp-2 vectors error": {**entry, "num_requests": 1, "last_request_timestamp": 105.0,
                                        "response_times": {"5": 1}},
               "ramp-4 vectors": {**entry, "num_requests": 99}},
        failures=[("ramp-2 vectors busy", "HTTP 503 (Retry-After 1)", 1),
                  ("ramp-2 vectors busy", "HTTP 429 (no Retry-After)", 1), ("ramp-2 vectors error", "timeout", 1)],
        timeline=[], records=[], log="")
    s = summary(run, {"label": "ramp-2", "users": 2, "start": 100.0, "end": 103.0, "ended": "time"}, ["vectors"])
    assert (s["requests"], s["ok"], s["busy"], s["errors"]) == (7, 4, 2, 1)
    assert s["busy_statuses"] == {"503": 1, "429": 1} and s["busy_with_retry_after"] == 1
    assert s["error_reasons"] == {"timeout": 1}
    assert (s["latency_p50_ms"], s["latency_p95_ms"], s["latency_max_ms"]) == (10, 40, 40.0)
    assert s["elapsed_s"] == 5.0 and s["throughput_rps"] == 4 / 5.0  # to the last answer, after the stage's end
    capped = summary(run, {"label": "ramp-2", "users": 2, "start": 100.0, "end": 106.0, "ended": "cap"}, ["vectors"])
    assert capped["elapsed_s"] == 5.0  # a capped stage ends with its last answer, not at the next tick
    timed = summary(run, {"label": "ramp-2", "users": 2, "start": 100.0, "end": 108.0, "ended": "time"}, ["vectors"])
    assert timed["elapsed_s"] == 8.0


def test_web_ui_runs_the_shape(tmp_path):
    import httpx

    port = free_port()
    with StubServer(service_s=0.01) as stub:
        ui = subprocess.Popen(
            [*LOCUST, "--host", stub.url, "--web-host", "127.0.0.1", "--web-port", str(port), "--loglevel", "WARNING"],
            cwd=ROOT, env=env(stages="baseline,ramp", ramp_steps="2", baseline_requests="5", step_requests="6"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as web:
                for _ in range(100):  # the UI comes up within a few seconds
                    with contextlib.suppress(httpx.HTTPError):
                        if web.get("/").status_code == 200:
                            break
                    time.sleep(0.2)
                started = web.post("/swarm", data={"user_count": 1, "spawn_rate": 1, "host": stub.url}).json()
                assert started["success"] and "WenmoStages" in started["message"]
                for _ in range(100):  # both stages end at their caps; the UI then shows the stopped test
                    stats = web.get("/stats/requests").json()
                    if stats["state"] == "stopped":
                        break
                    time.sleep(0.2)
        finally:
            ui.terminate()
            ui.wait(timeout=30)
        served = stub.served["/v1/embeddings"]
    counts = {s["name"]: s["num_requests"] for s in stats["stats"]}
    assert stats["state"] == "stopped", stats["state"]
    assert counts["baseline vectors_short"] == 5 and counts["ramp-2 vectors"] == 6 and served == 11
