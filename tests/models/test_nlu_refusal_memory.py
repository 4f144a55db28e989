"""A refused NLU request frees what it built when the refusal is answered, not at the next cyclic collection.

The relation preset on the demo model finds more than 10,000 spans and is refused (BudgetExceededError) after the
walk built them. The engine's queue re-raised the worker's error from a frame that still held it (`req.error`):
error → traceback → that frame → the error, a cycle, and every frame of the walk above it (its spans, ~100k Python
objects) waited for the cyclic collector. The HTTP API and the UI drop the traceback at their boundary
(app/web/disconnect.py, app/web/ui/common.py), so the soaks did not meet this; the service's in-process callers did
(the CLI, the bench tools, a program that embeds the service): in one process, round after round of the presets,
the live objects swung by 6.6 MiB (measurements/pymalloc-nlu-bursts-2026-11-28*.txt). Measured with the collector
off, as between two of its runs."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from app.composition import build_service, demo_models
from app.config import Settings
from app.errors import BudgetExceededError
from app.models.uninlu.presets import presets

# The walk's spans before the fix: ~102,000 blocks left after each refusal; after it ~6,400 (what the collector's
# run then frees is free lists, not garbage: it finds no unreachable object).
KEPT_BLOCKS_LIMIT = 30_000


@pytest.fixture(scope="module")
def relation() -> dict:
    return next(p for p in presets() if p["id"] == "relation")


@pytest.mark.parametrize("across", ["on", "off"])
def test_a_refused_walk_leaves_no_cycle_behind(tmp_path: Path, relation: dict, cpu_plan, across: str) -> None:
    service = build_service(Settings(batch_across_requests=across), ["nlu"], demo_dirs=demo_models(tmp_path),
                            plan=cpu_plan)
    try:
        with pytest.raises(BudgetExceededError):  # a first one: caches, pools and lazy imports filled
            service.nlu(relation["text"], relation["schema"])
        gc.collect()
        gc.disable()
        try:
            before = sys.getallocatedblocks()
            with pytest.raises(BudgetExceededError, match="10000 spans"):
                service.nlu(relation["text"], relation["schema"])
            kept = sys.getallocatedblocks() - before
            unreachable = gc.collect()
        finally:
            gc.enable()
    finally:
        service.close()
    assert kept < KEPT_BLOCKS_LIMIT, f"the refused walk left {kept:,} blocks for the cyclic collector"
    assert unreachable < 1_000, f"{unreachable:,} objects of the refused walk sat in reference cycles"
