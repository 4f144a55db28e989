"""tests/gpu/on_device.sh, the GPU checklist's script, in its CPU dry run: one step through the whole machinery (the
wheel check, the replicas, the step filter, the time limits, the packing), so the script cannot reach a lent GPU
with a typo. The full dry run (every step, ~5 minutes) is `tests/gpu/on_device.sh OUT --quick`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "gpu" / "on_device.sh"


def test_the_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_one_step_runs_and_comes_back_packed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"PYTHON": sys.executable, "WENMO_GPU_WORK": str(tmp_path / "work"),
                "WENMO_GPU_MODELS": str(tmp_path / "models"),
                "WENMO_GPU_STEPS": "native-memory-torch,shape-churn,batching"})
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--quick"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    steps = (out / "steps.log").read_text().splitlines()
    assert [line.split()[:2] for line in steps[:5]] == [["env", "rc=0"], ["replicas", "rc=0"],
                                                        ["native-memory-torch", "rc=0"], ["shape-churn", "rc=0"],
                                                        ["batching", "rc=0"]]
    assert steps[-1].startswith("done in ") and not any(s.startswith("bench-") for s in steps)  # the filter held
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
        report = json.load(tar.extractfile("./batching.json"))
        native = json.load(tar.extractfile("./native-memory-torch.json"))
        churn = json.load(tar.extractfile("./shape-churn.json"))
    assert {"env.log", "replicas.log", "batching.log", "batching.json", "steps.log"} <= names
    assert "models" not in names and "state" not in names  # the replicas stay behind: the tool returns ≤ 64 MiB
    assert report["on"]["answered"] == report["off"]["answered"] == 4 * 5 and report["device"] == "cpu"
    assert native["engine"] == "torch" and [p["forwards"] for p in native["phases"].values()] == [20] * 4
    assert native["attention"]["enabled"]["cudnn"] is False  # the server's default reached the run
    assert [s["forwards"] for s in churn["runs"]["on"]["samples"]] == [5, 10, 15, 20, 25, 30]
