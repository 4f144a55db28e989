"""Composition root: settings → plan → models → service. The one place that knows every layer.

Loads only the roles a command needs, so `embed` does not pay for the NLU model. Importing it loads no torch,
transformers or deepspeed (the model modules load them when a model is built), so the CLI imports it at the top.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from app.checkpoints import CheckpointPolicy, tuned_roots
from app.config import Settings
from app.engine.dsconfig import load_ds_config
from app.engine.limiter import ConcurrencyLimiter
from app.engine.loading import resolve_model
from app.engine.runtime import RuntimePlan, resolve_plan
from app.engine.workqueue import WorkQueue
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter
from app.models.family import ModelFamily, batch_limits
from app.models.fixtures import build_all
from app.models.uninlu.adapter import NluAdapter
from app.service import Service

log = logging.getLogger(__name__)

DEMO_DIRS = {"embed": "gte", "cross": "structbert", "nlu": "rex-uninlu"}  # as fixtures.build_all names them


def make_plan(settings: Settings) -> RuntimePlan:
    ds = load_ds_config(settings.ds_config)
    plan = resolve_plan(settings.device, settings.dtype, settings.engine, ds, min_batch_fill=settings.min_batch_fill,
                        cudnn_attention=settings.cudnn_attention, length_buckets=settings.length_buckets,
                        onednn_primitive_cache=settings.onednn_primitive_cache,
                        max_batch_tokens=settings.max_batch_tokens, max_batch_size=settings.max_batch_size,
                        max_length=settings.max_length)
    log.info("%s", plan.log_line(ds))
    return plan


DEMO_LOCK = "demo-models.lock"  # in the state directory, beside demo-models/


def demo_models(state_dir: Path) -> dict[str, Path]:
    """Tiny random-weight checkpoints for --demo, built once under the state directory.

    Several processes may want them at once (a server and a CLI command on one state directory, the launcher's
    next app while the old one still runs): a lock file lets one build while the others wait for it, and the
    build goes into a temporary folder renamed into place once complete. So nobody loads a checkpoint another
    process is still writing (or rewriting), and a build killed half-way leaves nothing under the final name.
    """
    import fcntl
    import shutil
    import tempfile

    root = state_dir / "demo-models"
    dirs = {role: root / name for role, name in DEMO_DIRS.items()}
    if _demo_complete(root, dirs):  # a complete tree is never written again: no lock needed to read it
        return dirs
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / DEMO_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("event=demo_models_wait path=%s (another process is building them; waiting for it)", root)
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the other process, or by the kernel when it dies
        if _demo_complete(root, dirs):  # the other process built them
            return dirs
        for left in state_dir.glob(".demo-models-*"):  # a build killed half-way (only the lock holder builds)
            shutil.rmtree(left, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=".demo-models-", dir=state_dir))
        try:
            built = build_all(building)
            (building / ".complete").touch()
            if root.exists():  # an incomplete tree from an older version (no lock, built in place)
                shutil.rmtree(root)
            building.rename(root)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        log.info("event=demo_models_built path=%s", root)
    return {role: root / path.name for role, path in built.items()}


def _demo_complete(root: Path, dirs: dict[str, Path]) -> bool:
    return (root / ".complete").exists() and all(d.is_dir() for d in dirs.values())


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
        loaded[role].queue = make_queue(role, loaded[role], settings, plan)
        log.info("event=model_loaded role=%s name=%s path=%s", role, name, path)
    demo_root = next(iter(demo_dirs.values())).parent if demo_dirs else None
    policy = CheckpointPolicy(tuned_roots(settings.model_dir, demo_root),
                              {role: Path(model.info.path) for role, model in loaded.items()})
    return Service(settings, embedder=loaded.get("embed"), cross_encoder=loaded.get("cross"),
                   nlu=loaded.get("nlu"), limiter=limiter, request_timeout_s=request_timeout_s,
                   loader=checkpoint_loader(settings, plan), checkpoints=policy)


def checkpoint_loader(settings: Settings, plan: RuntimePlan):  # noqa: ANN201 - a service.ModelLoader
    """Loads a role's adapter from another checkpoint directory for a swap (Service.serve_checkpoint), with the
    process's plan and settings, on the role's existing queue."""

    def load(role: str, path: Path, name: str, queue: WorkQueue) -> ModelFamily:
        model = load_adapter(role, path, plan, settings.max_length, name)
        model.queue = queue
        log.info("event=model_loaded role=%s name=%s path=%s (for a swap)", role, name, path)
        return model

    return load


def make_queue(role: str, model: ModelFamily, settings: Settings, plan: RuntimePlan) -> WorkQueue:
    """The role's engine queue: every request's work for this model goes through it (batched across requests
    unless batch_across_requests=off), under the settings' batch limits."""
    limits = batch_limits(model, plan, settings.max_batch_tokens, settings.max_batch_size)
    across = settings.batch_across_requests == "on"
    log.info("event=work_queue role=%s across_requests=%s max_batch_tokens=%d max_batch_size=%d min_fill=%g",
             role, "on" if across else "off", limits.max_batch_tokens, limits.max_batch_size, limits.min_fill)
    return WorkQueue(role, model, limits, across=across)


def load_adapter(role: str, path: Path, plan: RuntimePlan, max_length: int, name: str):  # noqa: ANN201
    if role == "embed":
        return EmbeddingAdapter(path, plan, max_length, name)
    if role == "cross":
        return CrossEncoderAdapter(path, plan, max_length, name)
    return NluAdapter(path, plan, max_length, name)
