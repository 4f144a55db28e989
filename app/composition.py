"""Composition root: settings → plan → models → service. The one place that knows every layer.

Loads only the roles a command needs, so `embed` does not pay for the NLU model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from app.config import Settings
from app.engine.dsconfig import load_ds_config
from app.engine.limiter import ConcurrencyLimiter
from app.engine.loading import resolve_model
from app.engine.runtime import RuntimePlan, resolve_plan
from app.service import Service

log = logging.getLogger(__name__)

ROLES = ("embed", "cross", "nlu")
DEMO_DIRS = {"embed": "gte", "cross": "structbert", "nlu": "rex-uninlu"}  # as fixtures.build_all names them


def make_plan(settings: Settings) -> RuntimePlan:
    ds = load_ds_config(settings.ds_config)
    plan = resolve_plan(settings.device, settings.dtype, settings.engine, ds, min_batch_fill=settings.min_batch_fill)
    log.info("%s", plan.log_line(ds))
    return plan


def demo_models(state_dir: Path) -> dict[str, Path]:
    """Tiny random-weight checkpoints for --demo, built once under the state directory."""
    from app.models.fixtures import build_all

    root = state_dir / "demo-models"
    marker = root / ".complete"
    dirs = {role: root / name for role, name in DEMO_DIRS.items()}
    if marker.exists() and all(d.is_dir() for d in dirs.values()):
        return dirs
    built = build_all(root)
    marker.touch()
    return built


def build_service(settings: Settings, roles: Iterable[str], *, limiter: ConcurrencyLimiter | None = None,
                  demo_dirs: dict[str, Path] | None = None, plan: RuntimePlan | None = None,
                  request_timeout_s: float | None = None) -> Service:
    roles = tuple(roles)
    plan = plan or make_plan(settings)
    names = {"embed": settings.embed_model, "cross": settings.cross_model, "nlu": settings.nlu_model}
    loaded = {}
    for role in roles:
        name = names[role]
        path = demo_dirs[role] if demo_dirs and role in demo_dirs else resolve_model(name, settings.model_dir)
        if demo_dirs and role in demo_dirs:
            name = f"demo:{path.name}"
        loaded[role] = load_adapter(role, path, plan, settings.max_length, name)
        log.info("event=model_loaded role=%s name=%s path=%s", role, name, path)
    return Service(settings, embedder=loaded.get("embed"), cross_encoder=loaded.get("cross"),
                   nlu=loaded.get("nlu"), limiter=limiter, request_timeout_s=request_timeout_s)


def load_adapter(role: str, path: Path, plan: RuntimePlan, max_length: int, name: str):  # noqa: ANN201
    if role == "embed":
        from app.models.embedding import EmbeddingAdapter

        return EmbeddingAdapter(path, plan, max_length, name)
    if role == "cross":
        from app.models.cross_encoder import CrossEncoderAdapter

        return CrossEncoderAdapter(path, plan, max_length, name)
    from app.models.uninlu.adapter import NluAdapter

    return NluAdapter(path, plan, max_length, name)
