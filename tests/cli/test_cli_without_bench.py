"""The app without the measurement tools beside it (bench/ left out of a copy, as a slim install may do) still
parses its commands and serves; only the bench commands are missing. It crashed at the first argv parse before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_copy_without_bench_still_runs_its_commands(tmp_path):
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "ds_config.json", tmp_path / "ds_config.json")
    # The checkout is installed (editable) into this virtualenv, whose .pth file would let `import bench` find the
    # checkout's bench/ from anywhere. -S skips site's .pth files; the site-packages folder on PYTHONPATH still
    # gives the copy its dependencies, and the copy in the working directory comes first.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]

    def app(*argv):
        return subprocess.run([sys.executable, "-S", "-m", "app", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    top = app("--help")
    assert top.returncode == 0, top.stderr
    assert "serve" in top.stdout and "bench" not in top.stdout.split("positional arguments")[-1].split("options")[0]
    assert app("serve", "--help").returncode == 0
    missing = app("bench", "--size", "tiny")
    assert missing.returncode == 2 and "invalid choice: 'bench'" in missing.stderr
    plan = app("plan", "--device", "cpu")
    assert plan.returncode == 0, plan.stderr
