"""Shared fixtures: tiny checkpoints in the real layouts, built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests never reach a model hub; make any accidental attempt fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_terminal_summary(terminalreporter, config) -> None:  # noqa: ANN001
    """Repeat pytest-randomly's seed under the results (its header line is hidden by -q and far above a
    failure in a CI log), with the command that runs the same order again."""
    seed = config.getoption("randomly_seed", default=None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"random test order: --randomly-seed={seed} "
                                    f"(tests/run.sh --randomly-seed={seed} … repeats it)")


@pytest.fixture(autouse=True)
def _onednn_variable_per_test(monkeypatch) -> None:  # noqa: ANN001
    """make_plan sets oneDNN's cache variable in this process (app/engine/onednn.py); undone after each test, so a
    server or CLI child a later test starts resolves its own `auto` instead of inheriting an earlier plan's."""
    from app.engine.onednn import ENV

    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from app.models.fixtures import build_gte, build_structbert

    root = tmp_path_factory.mktemp("tiny-models")
    return {"embed": build_gte(root / "gte"), "cross": build_structbert(root / "structbert")}


@pytest.fixture(scope="session")
def ds():
    from app.engine.dsconfig import load_ds_config

    return load_ds_config(ROOT / "ds_config.json")


@pytest.fixture(scope="session")
def cpu_plan(ds):
    from app.engine.runtime import resolve_plan

    return resolve_plan("cpu", "fp32", "torch", ds)


@pytest.fixture(scope="session")
def ds_plan(ds):
    from app.engine.runtime import resolve_plan

    return resolve_plan("cpu", "fp32", "deepspeed", ds)
