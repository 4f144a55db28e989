"""The launcher's NVML probe against a real CUDA process: a child that allocates GPU memory past the threshold is
restarted for memory, with NVML's figures, and its successor (which holds no GPU memory) is left alone.

The RSS twin of this test is tests/launcher/test_integration.py; this one needs a GPU and NVML. Skipped without.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launcher"))
from launcher_harness import LauncherProcess, free_port  # noqa: E402

from launcher.events import MEMORY_FILE  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU"),
]

THRESHOLD_MIB = 2048
GROW_MIB = 3072

CHILD = r"""
import os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

port, log, grow_mib = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
first = not log.exists()
with log.open("a") as f:
    f.write(f"start {os.getpid()}\n")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/readyz", "/healthz") else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

def grow():  # the first incarnation only: GPU memory in 256 MiB steps, held
    import torch
    blocks = []
    while len(blocks) * 256 < grow_mib:
        blocks.append(torch.ones(256 * 2**20, dtype=torch.uint8, device="cuda"))
        torch.cuda.synchronize()
        time.sleep(0.05)
    while True:
        time.sleep(1)

if first:
    threading.Thread(target=grow, daemon=True).start()
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
import signal
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.05)
"""


def test_child_over_gpu_threshold_is_restarted_with_nvml_figures(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "child.py").write_text(CHILD)
    args = ["--probe", "nvml", "--gpu-index", "0", "--threshold-mib", str(THRESHOLD_MIB), "--consecutive", "2",
            "--poll-s", "0.25", "--grace-s", "0", "--health-timeout-s", "5", "--startup-timeout-s", "60",
            "--backoff-initial-s", "0.1", "--release-timeout-s", "20", "--drain-s", "10",
            "--", sys.executable, str(tmp_path / "child.py"), str(port), str(tmp_path / "child.log"), str(GROW_MIB)]
    with LauncherProcess(args, tmp_path) as run:
        restart = run.wait_for("restart", timeout_s=120)
        assert restart["reason"] == "memory"
        assert restart["source"] in ("nvml-process", "nvml-device")  # device-level where NVML cannot see the PID
        assert restart["threshold_mib"] == THRESHOLD_MIB and restart["used_mib"] > THRESHOLD_MIB
        first_pid = run.child_pids()[0]
        run.wait_for("ready", timeout_s=60, match=lambda e: e["attempt"] == 2)
        samples = [json.loads(line) for line in (run.state_dir / MEMORY_FILE).read_text().splitlines()]
        over = [s for s in samples if s["pid"] == first_pid and s["used_mib"] > THRESHOLD_MIB]
        assert len(over) >= 2
        if restart["source"] == "nvml-process":  # the figure is the child's own: at most what it allocated + context
            assert restart["used_mib"] < GROW_MIB + 2048
        assert not run.named("restart")[1:], "the successor holds no GPU memory and must not be restarted"
        print(json.dumps({"restart": restart, "samples_over": len(over)}))  # the device script keeps this output
