"""The launcher's NVML probe against a real CUDA process: a child that allocates GPU memory past the threshold is
restarted for memory, with NVML's figures, and its successor (which holds no GPU memory) is left alone.

The child is launcher_harness's (the one tests/launcher supervises), growing on the GPU here; the same test runs
on the CPU with the RSS probe and host memory, so the test itself is checked on every machine; the CUDA case needs
a GPU and NVML and is skipped without. Run on an NVIDIA H200
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
from launcher_harness import LauncherProcess, child_command, free_port, wait_until  # noqa: E402

from launcher.events import MEMORY_FILE  # noqa: E402

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU")
CASES = [  # probe, where the child allocates, threshold, what the first incarnation allocates (MiB)
    pytest.param("nvml", "cuda", 2048, 3072, id="nvml-cuda", marks=[pytest.mark.gpu, NO_CUDA]),
    pytest.param("rss", "host", 150, 300, id="rss-host"),
]


@pytest.mark.parametrize(("probe", "device", "threshold_mib", "grow_mib"), CASES)
def test_child_over_the_threshold_is_restarted_with_the_probes_figures(
        tmp_path: Path, probe: str, device: str, threshold_mib: int, grow_mib: int) -> None:
    port = free_port()
    args = ["--probe", probe, "--gpu-index", "0", "--threshold-mib", str(threshold_mib), "--consecutive", "2",
            "--poll-s", "0.25", "--grace-s", "0", "--health-timeout-s", "5", "--startup-timeout-s", "60",
            "--backoff-initial-s", "0.1", "--release-timeout-s", "20", "--drain-s", "10",
            *child_command(tmp_path, "grow", port, "--grow-mib", str(grow_mib), "--grow-on", device)]
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
        if restart["source"] != "nvml-device":  # the figure is the child's own: what it allocated + CUDA context
            assert restart["used_mib"] < grow_mib + 2048
        second_pid = run.child_pids()[1]

        def successor_sampled_under() -> bool:
            lines = (run.state_dir / MEMORY_FILE).read_text().splitlines()
            return any(s["pid"] == second_pid and s["used_mib"] < threshold_mib for s in map(json.loads, lines))

        assert wait_until(successor_sampled_under, 10)
        assert not run.named("restart")[1:], "the successor does not grow and must not be restarted"
        print(json.dumps({"restart": restart, "samples_over": len(over)}))  # the device script keeps this output
