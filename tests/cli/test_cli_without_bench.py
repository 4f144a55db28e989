"""The app without the measurement tools beside it (bench/ left out of a copy, as a slim install may do) still
parses its commands and serves; only the bench commands are missing. It crashed at the first argv parse before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_copy_without_bench_still_runs_its_commands(tmp_path):
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "ds_config.json", tmp_path / "ds_config.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_") and k != "PYTHONPATH"}

    def app(*argv):
        return subprocess.run([sys.executable, "-m", "app", *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    top = app("--help")
    assert top.returncode == 0, top.stderr
    assert "serve" in top.stdout and "bench" not in top.stdout.split("positional arguments")[-1].split("options")[0]
    assert app("serve", "--help").returncode == 0
    missing = app("bench", "--size", "tiny")
    assert missing.returncode == 2 and "invalid choice: 'bench'" in missing.stderr
    plan = app("plan", "--device", "cpu")
    assert plan.returncode == 0, plan.stderr
