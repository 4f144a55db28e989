"""One tune run, start to end, in this process: `wenmo tune` / `python -m app tune` (and each rank under
`deepspeed --num_gpus N -m app tune …`).

    read and check the pairs → resolve the source checkpoint and the output folder → the DeepSpeed plan
    (trainplan.py) → `deepspeed.initialize` (ZeRO stage as ds_config.json says; the report states the stage the
    engine built) → held-out figures before → train → checkpoint into a staging folder → figures after, on the
    written checkpoint through serving's own loader → report (JSON + PNG) → rename into place → done.

SIGTERM or SIGINT stops it between steps (or between evaluation chunks): the staging folder is removed, a
`cancelled` event written, and the process exits 143 (SIGTERM) or 130 (SIGINT). Several ranks: each trains on
its own slice of every batch; rank 0 alone evaluates, writes and reports, the others wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.composition import demo_models
from app.config import Settings
from app.engine.dsconfig import load_ds_config
from app.engine.loading import resolve_model
from app.engine.runtime import bf16_at_full_rate, import_deepspeed, resolve_plan
from app.errors import InputError, WenmoError
from app.tune.evaluation import Stopped, evaluate
from app.tune.events import EventLog
from app.tune.output import check_target, default_out, publish, remove_stale_staging, staging_dir, write_checkpoint
from app.tune.pairs import PairFile, data_warnings, overlap, read_pairs
from app.tune.report import png_path, write_report
from app.tune.trainable import ROLES, batch_loss, load_trainable, resolve_loss, trained_state
from app.tune.trainplan import distributed_env, read_raw, training_config

log = logging.getLogger(__name__)

EXIT_BY_SIGNAL = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal, as a shell reports it


@dataclass
class TuneOptions:
    role: str
    train: str
    eval: str
    out: str | None = None
    report: str | None = None
    events: str | None = None
    epochs: int = 1
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    loss: str = "auto"
    seed: int = 0
    demo: bool = False


class StopRequest:
    """Set by SIGTERM/SIGINT; the loop looks at it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        def on_signal(signum: int, frame: Any) -> None:  # noqa: ANN401
            self.signum = signum

        previous = {s: signal.signal(s, on_signal) for s in EXIT_BY_SIGNAL}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Cancelled(Exception):  # noqa: N818 - a request, not an error
    pass


def source_dir(role: str, settings: Settings, demo: bool) -> tuple[Path, str]:
    """(the checkpoint to start from, its name for the report)."""
    if demo:
        path = demo_models(Path(settings.state_dir).expanduser())[role]
        return path, f"demo:{path.name}"
    name = settings.embed_model if role == "embed" else settings.cross_model
    return resolve_model(name, settings.model_dir), name


def training_device(settings: Settings) -> str:
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if settings.device == "cpu" or (settings.device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if settings.device in ("auto", "cuda"):
        return f"cuda:{local_rank}"
    return resolve_plan(settings.device, "fp32", "torch", load_ds_config(settings.ds_config)).device


def batches(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Index lists of `size`, endlessly: each epoch a fresh shuffle; a short tail is filled from the next epoch."""
    rng = random.Random(seed)
    pending: list[int] = []
    while True:
        order = list(range(n))
        rng.shuffle(order)
        pending.extend(order)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]


def planned_steps(options: TuneOptions, n_train: int, global_batch: int) -> int:
    if options.steps is not None:
        return options.steps
    return max(1, math.ceil(n_train / global_batch)) * options.epochs


@dataclass
class TuneOutcome:
    exit_code: int
    summary: dict[str, Any] | None = None  # on success: out, report, zero_stage, steps, before, after


class Staging:
    """The run's staging folder while it exists: removed on the way out unless it was published."""

    path: Path | None = None


def run_tune(options: TuneOptions, settings: Settings) -> TuneOutcome:
    events = EventLog(options.events if int(os.environ.get("RANK", "0") or 0) == 0 else None)
    stop = StopRequest()
    staging = Staging()
    try:
        with stop.installed():
            try:
                return _run(options, settings, events, stop, staging)
            except (Cancelled, Stopped):
                log.warning("event=tune_cancelled signal=%s", stop.signum)
                events.emit("cancelled")
                return TuneOutcome(EXIT_BY_SIGNAL.get(stop.signum, 130))
    except WenmoError as e:
        events.emit("error", message=e.message)
        raise
    except Exception as e:
        events.emit("error", message=f"{type(e).__name__}: {e}")
        raise
    finally:
        if staging.path is not None:
            shutil.rmtree(staging.path, ignore_errors=True)
        events.close()


def _run(options: TuneOptions, settings: Settings, events: EventLog, stop: StopRequest,  # noqa: C901, PLR0915
         staging: Staging) -> TuneOutcome:
    if options.role not in ROLES:
        raise InputError(f"--model {options.role}: choose embed (the GTE embedder) or cross (the cross-encoder)")
    started = time.time()
    train, held_out = read_pairs(options.train), read_pairs(options.eval)
    loss_name = resolve_loss(options.role, options.loss, train.binary)
    warnings = data_warnings(train, held_out)
    for w in warnings:
        log.warning("event=tune_data %s", w)
    if len(held_out.pairs) < 2:
        raise InputError(f"{held_out.path}: {len(held_out.pairs)} pair; the held-out figures need at least 2")

    source, model_name = source_dir(options.role, settings, options.demo)
    base = source.parent if options.demo else Path(settings.model_dir).expanduser()
    target = Path(options.out).expanduser() if options.out else default_out(base, options.role)
    check_target(target, source)
    report_path = Path(options.report).expanduser() if options.report else target / "tune-report.json"
    remove_stale_staging(target.parent)

    for key, value in distributed_env().items():
        os.environ[key] = value
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = training_device(settings)
    import torch

    def bf16_ok(d: str) -> bool:
        return bf16_at_full_rate(tuple(torch.cuda.get_device_capability(d)))

    raw = read_raw(settings.ds_config)
    probe = training_config(raw, device=device, bf16_ok=bf16_ok, batch_size=options.batch_size, lr=options.lr,
                            steps=1, path=settings.ds_config)
    steps = planned_steps(options, len(train.pairs), probe.micro_batch * probe.accumulation * world)
    plan = training_config(raw, device=device, bf16_ok=bf16_ok, batch_size=options.batch_size, lr=options.lr,
                           steps=steps, path=settings.ds_config)
    log.info("%s", plan.log_line())

    torch.manual_seed(options.seed)
    random.seed(options.seed)
    trainable = load_trainable(options.role, source, settings.max_length)
    deepspeed = import_deepspeed()
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    # DeepSpeed prints (not logs) some lines on stdout, which carries the command's result: sent to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        deepspeed.init_distributed(dist_backend="nccl" if device.startswith("cuda") else "gloo")
        engine, optimizer, _, _ = deepspeed.initialize(
            model=trainable.module, model_parameters=[p for p in trainable.module.parameters() if p.requires_grad],
            config=plan.config)
    zero_stage = int(engine.zero_optimization_stage())
    inner = getattr(optimizer, "optimizer", optimizer)
    optimizer_name = type(inner).__module__.split(".")[0] + "." + type(inner).__name__
    eval_plan = resolve_plan(device, settings.dtype, "torch", load_ds_config(settings.ds_config),
                             min_batch_fill=settings.min_batch_fill)
    duplicates = {"train": len(train.duplicates), "eval": len(held_out.duplicates)}
    found_overlap = len(overlap(train, held_out))
    events.emit("start", model=model_name, role=options.role, loss=loss_name, source=str(source), out=str(target),
                steps=steps, zero_stage=zero_stage, offload_optimizer=plan.offload_optimizer, precision=plan.dtype,
                optimizer=optimizer_name, device=device, world_size=world, micro_batch=plan.micro_batch,
                train_pairs=len(train.pairs), eval_pairs=len(held_out.pairs), duplicates=duplicates,
                overlap=found_overlap, warnings=warnings)
    log.info("event=tune_start role=%s source=%s steps=%d zero_stage=%d optimizer=%s world_size=%d", options.role,
             source, steps, zero_stage, optimizer_name, world)

    before: dict[str, Any] = {}
    if rank == 0:
        before = evaluate(options.role, source, held_out, eval_plan, settings.max_length, stop)
        events.emit("eval", phase="before", metrics=before)
    _barrier(world)

    losses = _train(engine, trainable, train, plan, steps, rank, world, options, device, events, stop, loss_name)

    if rank != 0:
        _barrier(world)
        return TuneOutcome(0)
    staging.path = staging_dir(target)
    write_checkpoint(source, staging.path, trained_state(trainable))
    del engine, optimizer, trainable  # the training copy's memory goes before the written checkpoint loads
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    after = evaluate(options.role, staging.path, held_out, eval_plan, settings.max_length, stop)
    events.emit("eval", phase="after", metrics=after)
    if stop():
        raise Cancelled
    report = {
        "model": model_name, "role": options.role, "source": str(source), "out": str(target),
        "zero_stage": zero_stage, "offload_optimizer": plan.offload_optimizer, "precision": plan.dtype,
        "optimizer": optimizer_name, "device": device, "world_size": world, "steps": steps,
        "micro_batch": plan.micro_batch, "gradient_accumulation_steps": plan.accumulation,
        "lr": plan.config["optimizer"]["params"].get("lr"), "loss": loss_name,
        "before": before, "after": after, "losses": losses,
        "train": {"path": train.path, "pairs": len(train.pairs), "duplicates": len(train.duplicates),
                  "binary": train.binary},
        "eval": {"path": held_out.path, "pairs": len(held_out.pairs), "duplicates": len(held_out.duplicates),
                 "overlap_with_train": found_overlap},
        "warnings": warnings, "plan": list(plan.reasons), "seconds": round(time.time() - started, 1),
    }
    inside = _inside(report_path, target)
    if inside is not None:  # the report travels with the checkpoint: written before the rename
        write_report(staging.path / inside, report)
    publish(staging.path, target)
    staging.path = None
    if inside is None:
        write_report(report_path, report)
    _barrier(world)
    events.emit("done", out=str(target), report=str(report_path), png=str(png_path(report_path)),
                before=before, after=after)
    log.info("event=tune_done out=%s report=%s", target, report_path)
    return TuneOutcome(0, {"out": str(target), "report": str(report_path), "zero_stage": zero_stage,
                           "steps": steps, "before": before, "after": after})


def _train(engine: Any, t: Any, train: PairFile, plan: Any, steps: int, rank: int, world: int,  # noqa: ANN401
           options: TuneOptions, device: str, events: EventLog, stop: StopRequest, loss_name: str) -> list[float]:
    micro = plan.micro_batch
    order = batches(len(train.pairs), micro * world, options.seed)
    losses = []
    engine.train()
    for step in range(1, steps + 1):
        if stop():
            raise Cancelled
        total = 0.0
        for _ in range(plan.accumulation):
            chosen = [train.pairs[i] for i in next(order)[rank * micro:(rank + 1) * micro]]
            loss = batch_loss(t, engine, [p.text_a for p in chosen], [p.text_b for p in chosen],
                              [p.label for p in chosen], device, loss_name)
            engine.backward(loss)
            engine.step()
            total += float(loss.detach())
        losses.append(round(total / plan.accumulation, 6))
        events.emit("step", step=step, steps=steps, loss=losses[-1])
    engine.eval()
    return losses


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _inside(path: Path, folder: Path) -> Path | None:
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        return None


def summary_line(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items())
