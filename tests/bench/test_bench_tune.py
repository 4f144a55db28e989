"""`bench-tune` as a child process: plain AdamW against ZeRO-2 on the CPU, and what `--devices` leaves out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench_tune(tmp: Path, *args: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_STATE_DIR": str(tmp / "state"), "WENMO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
                "WENMO_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""})
    out = tmp / "tune.json"
    proc = subprocess.run([sys.executable, "-m", "app", "bench-tune", "--size", "tiny", "--models-dir",
                           str(tmp / "models"), "--json", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), proc.stdout


def test_cuda_only_on_a_machine_without_one_measures_nothing_and_says_why(tmp_path: Path) -> None:
    results, out = bench_tune(tmp_path, "--devices", "cuda")
    assert results["cpu"] == {} and results["cuda"] is None
    assert "no CUDA device" in results["cuda_skipped"] and "no CUDA device" in out
    # The replica is the one `bench` uses: <models dir>/<size>/gte, built once.
    assert (tmp_path / "models" / "tiny" / "gte" / ".bench-complete").exists()


@pytest.mark.slow
def test_cpu_steps_of_plain_adamw_and_zero2_on_the_same_model(tmp_path: Path) -> None:
    results, out = bench_tune(tmp_path, "--devices", "cpu", "--tune-steps", "2", "--tune-batch", "4")
    adamw, zero2 = results["cpu"]["torch-adamw"], results["cpu"]["zero2"]
    assert adamw["params"] == zero2["params"] > 0
    assert zero2["zero_stage"] == 2 and adamw["precision"] == zero2["precision"] == "fp32"
    assert adamw["steps_per_s"] > 0 and zero2["steps_per_s"] > 0
    assert results["cuda"] is None and results["cuda_skipped"] == "not asked for (--devices cpu)"
    assert "zero2" in out and "torch-adamw" in out


def test_a_failed_child_is_reported_by_its_exception_not_the_warnings_printed_after_it() -> None:
    from bench.tuning import failure_line

    stderr = ("[2026-11-27 09:42:30] [INFO] building FusedAdam\nTraceback (most recent call last):\n"
              '  File "x.py", line 1, in <module>\nRuntimeError: Error building extension \'fused_adam\'\n'
              "[rank0]:[W1127 09:42:36 ProcessGroupNCCL.cpp:1575] Warning: WARNING: destroy_process_group() was not "
              "called before program exit\n")
    assert failure_line(stderr, 1) == "RuntimeError: Error building extension 'fused_adam'"
    assert failure_line("killed by the OOM killer\n[W] Warning: at exit\n", -9) == "killed by the OOM killer"
    assert failure_line("", -9) == "exit status -9, no error printed"
