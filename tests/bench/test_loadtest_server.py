"""`loadtest` against the real app server (`python -m app serve --demo`), started here on a free port.

Skipped only while app/web/server.py does not exist. The server may still be loading when the load test
starts: the load test waits for GET /readyz itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loadtest_against_the_demo_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_AUTH": "u:p", "WENMO_STATE_DIR": str(tmp_path / "state"), "WENMO_LOG_LEVEL": "WARNING",
                "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)})
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--demo", "--port", str(port), "--max-concurrent", "1",
         "--max-queue", "8", "--drain-s", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    out_json, out_png = tmp_path / "lt.json", tmp_path / "lt.png"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "loadtest", "--url", f"http://127.0.0.1:{port}", "--users", "2",
             "--step-s", "5", "--step-requests", "8", "--baseline-requests", "8", "--soak-s", "2", "--mixed-s", "3",
             "--mixed-requests", "12", "--metrics-interval-s", "0.5", "--p95-target-ms", "30000",
             "--ready-timeout-s", "180", "--json", str(out_json), "--plot", str(out_png)],
            cwd=ROOT, env=env, capture_output=True, timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
    server_log = (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")[-2000:]
    assert proc.returncode == 0, proc.stderr.decode()[-2000:] + "\n--- server ---\n" + server_log
    r = json.loads(out_json.read_text(encoding="utf-8"))
    st = r["stages"]
    b = st["baseline"]
    assert (b["requests"], b["ok"], b["busy"], b["errors"]) == (8, 8, 0, 0), r.get("error_samples")
    steps = st["ramp"]["steps"]
    assert [s["users"] for s in steps] == [1, 2]
    assert all(s["requests"] == 8 and s["errors"] == 0 and s["busy"] == 0 for s in steps)
    assert st["ramp"]["safe_concurrency"] == 2  # generous target, queue of 8: both steps pass
    assert st["soak"]["users"] == 2 and st["soak"]["ok"] > 0
    # The tiny random NLU model can pass the span budget (422) on the presets' nested schemas; nothing else fails.
    assert all(v["errors"] == 0 for k, v in st["soak"]["by_kind"].items() if k != "nlu"), r.get("error_samples")
    assert st["soak"]["verdict"]["gauges"] and st["soak"]["verdict"]["rate_rps"] > 0
    assert st["soak"]["metrics_scrapes_failed"] == 0 and len(st["soak"]["memory_samples"]) >= 3
    for key, m in st["soak"]["memory"].items():  # whatever memory gauges the server exposes
        assert m["samples"] >= 3 and m["first"] >= 0, key
    mixed = st["mixed"]["by_kind"]
    assert mixed["vectors"]["errors"] == 0 and mixed["similarity"]["errors"] == 0
    assert sum(k["requests"] for k in mixed.values()) == st["mixed"]["requests"] == 12
    ov = r["overhead"]  # the server sends X-Wenmo-Engine-Ms, so every baseline request has an engine time
    assert ov["requests"] == 8 and 0 < ov["engine_p50_ms"] < ov["http_p50_ms"], ov
    assert ov["overhead_ms"] > 0 and ov["target_met"] == (ov["overhead_ms"] <= 15)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
