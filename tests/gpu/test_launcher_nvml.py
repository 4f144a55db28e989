"""The launcher's NVML probe against a real CUDA process: a child that allocates GPU memory past the threshold is
restarted for memory, with NVML's figures, and its successor (which holds no GPU memory) is left alone.

The same test runs on the CPU with the RSS probe and host memory (torch tensors either way), so the test itself is
checked on every machine; the CUDA case needs a GPU and NVML and is skipped without. Run on an NVIDIA H200
(2026-11-27): the launcher saw the child through NVML per process (`nvml-process`: 2914, then 3682 MiB against
2048), restarted it for memory, drained it (exit 0) and saw its GPU memory released at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launcher"))
from launcher_harness import LauncherProcess, free_port, wait_until  # noqa: E402

from launcher.events import MEMORY_FILE  # noqa: E402

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU")
CASES = [  # probe, device the child allocates on, threshold, what the first incarnation allocates (MiB)
    pytest.param("nvml", "cuda", 2048, 3072, id="nvml-cuda", marks=[pytest.mark.gpu, NO_CUDA]),
    pytest.param("rss", "cpu", 1024, 1536, id="rss-cpu"),  # importing torch alone is a few hundred MiB resident
]

CHILD = r"""
import os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The launcher reads the app's port from `--port N` in the command (as `python -m app serve` takes it).
port, log, device, grow_mib = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
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

def grow():  # the first incarnation only: memory in 256 MiB steps, written, held
    import torch
    blocks = []
    while len(blocks) * 256 < grow_mib:
        blocks.append(torch.ones(256 * 2**20, dtype=torch.uint8, device=device))
        if device == "cuda":
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


@pytest.mark.parametrize(("probe", "device", "threshold_mib", "grow_mib"), CASES)
def test_child_over_the_threshold_is_restarted_with_the_probes_figures(
        tmp_path: Path, probe: str, device: str, threshold_mib: int, grow_mib: int) -> None:
    port = free_port()
    (tmp_path / "child.py").write_text(CHILD)
    args = ["--probe", probe, "--gpu-index", "0", "--threshold-mib", str(threshold_mib), "--consecutive", "2",
            "--poll-s", "0.25", "--grace-s", "0", "--health-timeout-s", "5", "--startup-timeout-s", "60",
            "--backoff-initial-s", "0.1", "--release-timeout-s", "20", "--drain-s", "10",
            "--", sys.executable, str(tmp_path / "child.py"), "--port", str(port), str(tmp_path / "child.log"),
            device, str(grow_mib)]
    with LauncherProcess(args, tmp_path) as run:
        restart = run.wait_for("restart", timeout_s=120)
        assert restart["reason"] == "memory"
        # NVML: device-level where it cannot see the PID (a container without the host's PID namespace)
        assert restart["source"] in ({"nvml-process", "nvml-device"} if probe == "nvml" else {"rss"})
        assert restart["threshold_mib"] == threshold_mib and restart["used_mib"] > threshold_mib
        first_pid = run.child_pids()[0]
        run.wait_for("ready", timeout_s=60, match=lambda e: e["attempt"] == 2)
        samples = [json.loads(line) for line in (run.state_dir / MEMORY_FILE).read_text().splitlines()]
        over = [s for s in samples if s["pid"] == first_pid and s["used_mib"] > threshold_mib]
        assert len(over) >= 2
        if restart["source"] != "nvml-device":  # the figure is the child's own: what it allocated + torch + context
            assert restart["used_mib"] < grow_mib + 2048
        second_pid = run.child_pids()[1]

        def successor_sampled_under() -> bool:
            lines = (run.state_dir / MEMORY_FILE).read_text().splitlines()
            return any(s["pid"] == second_pid and s["used_mib"] < threshold_mib for s in map(json.loads, lines))

        assert wait_until(successor_sampled_under, 10)
        assert not run.named("restart")[1:], "the successor holds no GPU memory and must not be restarted"
        print(json.dumps({"restart": restart, "samples_over": len(over)}))  # the device script keeps this output
