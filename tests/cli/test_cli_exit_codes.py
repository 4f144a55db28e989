"""The shell's exit status is the error class's `exit_code` (app/errors.py), for real `python -m app` runs: one
error renderer (app/cli.py `report_error`), no exit codes of its own. Which class a run meets is asserted through
its message, so a run that failed for another reason does not pass by having the same status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.errors import ConfigError, InputError, ModelUnavailableError

ROOT = Path(__file__).resolve().parents[2]


def run_app(args: list[str], tmp: Path, stdin: str = "", env: dict[str, str] | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    clean.update({"PYTHONPATH": str(ROOT), "WENMO_STATE_DIR": str(tmp / "state"), "WENMO_MODEL_DIR": str(tmp / "c"),
                  **(env or {})})
    return subprocess.run([sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=clean, timeout=180)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout == "", done.stdout[-500:]
    return done.stderr.strip().splitlines()[-1]


def test_input_error_exits_with_its_class_code(tiny_dirs, tmp_path):
    done = run_app(["embed", "--model", str(tiny_dirs["embed"])], tmp_path, stdin="北京\n\n上海\n")
    assert done.returncode == InputError.exit_code == 2, done.stderr[-3000:]
    line = error_line(done)
    assert line.startswith("error: ") and "line 2" in line and "--skip-blank" in line, line


def test_config_error_exits_with_its_class_code(tmp_path):
    done = run_app(["plan"], tmp_path, env={"WENMO_BATCH_ACROSS_REQUESTS": "maybe"})
    assert done.returncode == ConfigError.exit_code == 2, done.stderr[-3000:]
    assert error_line(done) == ("error: --batch-across-requests / WENMO_BATCH_ACROSS_REQUESTS: 'maybe' is not "
                                "valid; choose one of on, off")


def test_model_unavailable_error_exits_with_its_class_code(tmp_path):
    """A model directory without a checkpoint: the class says 2 and so does the shell (the CLI used to map it
    to 2 by hand while the class said 1)."""
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    done = run_app(["embed", "--model", str(empty)], tmp_path, stdin="北京\n")
    assert done.returncode == ModelUnavailableError.exit_code == 2, done.stderr[-3000:]
    line = error_line(done)
    assert line.startswith("error: ") and str(empty) in line and "config.json" in line, line
