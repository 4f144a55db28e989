"""Native memory per forward, in four phases that tell a leak from memory kept per input shape or per thread.

Why: the demo soak on an H200 (2026-11-27, README "On a GPU, the second lease") grew 130 MiB per 1,000 requests,
nearly all of it the C heap in use, with Python's object count flat; the same soak on the CPU grows ~0.2. A leak
(something kept per forward) and a cache that fills once per new input shape (CUDA kernels loaded lazily, library
plans) look alike in a soak of random texts but behave differently here. Forwards go through a model adapter's
own `forward_batch` — the path the engine's worker calls — without HTTP, queueing or tokenizing:

- `same`:    one shape (rows × padded length) again and again — growth here is per forward: a leak;
- `new`:     a shape never run before on every forward — growth here but not in `same` is per shape;
- `again`:   the `new` phase's shapes once more — flat if it was the shapes (a cache that levels off);
- `threads`: the `same` shape, each forward from a fresh thread — growth here is per thread (CUDA handles and
             workspaces a library keeps for each thread that used it).

Each phase is measured from a sample after a garbage collection (and a CUDA synchronize) to the next: the C heap
in use (glibc), resident memory, and on CUDA the caching allocator's reserved bytes and the process's memory as
NVML sees it; printed as KiB per forward, with the phase's verdict.

    python -m bench.native_memory --demo [--device cuda] [--engine auto] [--family embed] [--forwards 200]
                                  [--cudnn-attention off|on] [--json PATH]
    python -m bench.native_memory --model DIR …          # a real or replica checkpoint of that family
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.allocator import malloc_stats
from app.argtypes import positive_int
from app.composition import make_plan
from app.config import Settings
from app.hostinfo import process_gpu_bytes
from app.models.checkpoint import read_json
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter
from app.models.fixtures import build_gte, build_structbert
from bench.cli import publish
from bench.memory import rss_mib

PHASES = ("same", "new", "again", "threads")
ROWS_CYCLE = 16  # the `new` phase walks rows 1…16 at each padded length, then the next length
FLAT_KIB = 4.0  # below this many KiB per forward a phase counts as flat (the H200 soak kept ~145 KiB a request)


def shapes(phase: str, forwards: int, max_length: int) -> list[tuple[int, int]]:
    """(rows, padded length) of each forward of a phase; `new` (and `again`) never repeat one within the phase."""
    if phase in ("same", "threads"):
        return [(8, 32 if max_length >= 32 else max_length)] * forwards
    room = (max_length - 3) * ROWS_CYCLE  # lengths 4 … max_length
    if forwards > room:
        raise ValueError(f"--forwards {forwards}: this model has room for {room} distinct shapes")
    return [(1 + i % ROWS_CYCLE, 4 + i // ROWS_CYCLE) for i in range(forwards)]


def batch(rows: int, length: int, cls: int, sep: int, token: int) -> list[tuple[list[int], list[int]]]:
    ids = [cls] + [token] * (length - 2) + [sep]
    return [(ids, [0] * length)] * rows


def sample(cuda: bool) -> dict[str, float | None]:
    """Memory figures in MiB after a collection (and a synchronize on CUDA: nothing still in flight)."""
    import torch

    gc.collect()
    if cuda:
        torch.cuda.synchronize()
    heap = malloc_stats()
    gpu = process_gpu_bytes(os.getpid()) if cuda else None
    return {"heap_in_use_mib": heap["in_use"] / 2**20 if heap else None, "rss_mib": rss_mib(),
            "cuda_reserved_mib": torch.cuda.memory_reserved() / 2**20 if cuda else None,
            "nvml_process_mib": gpu / 2**20 if gpu is not None else None}


def run_phase(phase: str, forward: Callable[[list[tuple[list[int], list[int]]]], Any],
              plan_shapes: list[tuple[int, int]], ids: tuple[int, int, int], cuda: bool) -> dict[str, Any]:
    before = sample(cuda)
    for rows, length in plan_shapes:
        work = batch(rows, length, *ids)
        if phase == "threads":
            t = threading.Thread(target=forward, args=(work,), name="native-memory-fresh")
            t.start()
            t.join()
        else:
            forward(work)
    after = sample(cuda)
    n = len(plan_shapes)
    per = {k.replace("_mib", "_kib_per_forward"): (after[k] - before[k]) * 1024 / n  # type: ignore[operator]
           for k in before if before[k] is not None and after[k] is not None}
    return {"phase": phase, "forwards": n, "distinct_shapes": len(set(plan_shapes)), "before": before,
            "after": after, "per_forward": per}


def verdict(phases: dict[str, dict[str, Any]], key: str = "heap_in_use_kib_per_forward") -> str:
    """Which of the phases' explanations the C heap's growth fits (the figures are in the table beside it)."""
    grew = {p: phases[p]["per_forward"].get(key, 0.0) > FLAT_KIB for p in phases}
    if grew.get("same"):
        return "grows on every forward of one shape: a leak per forward"
    if grew.get("threads"):
        return "grows per fresh thread: state kept per thread that ran a forward"
    if grew.get("new") and not grew.get("again"):
        return "grows per new shape only: a per-shape cache that levels off with the shapes (bucket lengths)"
    if grew.get("new") or grew.get("again"):
        return "grows with new shapes and again on seen ones: not a per-shape cache; look deeper"
    return f"flat in every phase (< {FLAT_KIB:g} KiB per forward)"


def build_adapter(family: str, model: Path | None, settings: Settings, work: Path) -> Any:  # noqa: ANN401
    if model is None:
        model = (build_gte if family == "embed" else build_structbert)(work / family)
    adapter_type = EmbeddingAdapter if family == "embed" else CrossEncoderAdapter
    return adapter_type(model, make_plan(settings))


def measure(forward: Callable[[list[tuple[list[int], list[int]]]], Any], max_length: int, ids: tuple[int, int, int],
            forwards: int, cuda: bool) -> dict[str, dict[str, Any]]:
    """The four phases over `forward` (a model's forward_batch, or a test's stand-in), after a short warm-up."""
    for _ in range(3):  # first-call work of the one `same` shape
        forward(batch(*shapes("same", 1, max_length)[0], *ids))
    new = shapes("new", forwards, max_length)
    plans = {"same": shapes("same", forwards, max_length), "new": new, "again": new,
             "threads": shapes("threads", forwards, max_length)}
    return {p: run_phase(p, forward, plans[p], ids, cuda) for p in PHASES}


def attention_choice(adapter: Any) -> dict[str, Any]:  # noqa: ANN401
    """Which fused attention kernel torch picks for the `same` phase's shape (8 rows × 32 tokens, a padding mask, the
    plan's dtype), and its priority order: cuDNN's attention keeps a compiled graph for every shape it sees
    (pytorch/pytorch#190388: thread-local, unbounded by default)."""
    import torch
    from torch.nn.attention import SDPBackend

    config = read_json(adapter.model_dir, "config.json")
    heads = int(config["num_attention_heads"])
    q = torch.zeros(8, heads, 32, int(config["hidden_size"]) // heads, device=adapter.plan.device,
                    dtype=adapter.plan.torch_dtype)
    mask = torch.ones(8, 1, 32, 32, dtype=torch.bool, device=adapter.plan.device)
    order = [SDPBackend(int(b)).name for b in torch._C._get_sdp_priority_order()]
    return {"chosen": SDPBackend(torch._fused_sdp_choice(q, q, q, mask, 0.0, False)).name, "priority_order": order}


def run(family: str, model: Path | None, device: str, engine: str, forwards: int, cudnn_attention: str = "off"
        ) -> dict[str, Any]:
    import torch

    # Padded to the longest row: the phases are about shapes, and the server's length ladder would fold the `new`
    # phase's lengths onto a few rungs (bench/shape_churn.py compares the two).
    settings = Settings(device=device, engine=engine, cudnn_attention=cudnn_attention, length_buckets="off")
    with tempfile.TemporaryDirectory(prefix="wenmo-native-memory-") as tmp:
        adapter = build_adapter(family, model, settings, Path(tmp))
        tok = adapter.tokenizer
        ids = (tok.cls_token_id, tok.sep_token_id, tok.convert_tokens_to_ids("文"))
        plan = adapter.plan
        attention = attention_choice(adapter)
        phases = measure(adapter.forward_batch, adapter.max_length, ids, forwards, plan.is_cuda)
    flags = {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled", None)
             for name in ("flash", "mem_efficient", "math", "cudnn")}
    attention["enabled"] = {name: flag() for name, flag in flags.items() if flag is not None}
    return {"schema": "wenmo-native-memory/1", "family": family, "model": str(model) if model else "demo (tiny)",
            "device": plan.device, "dtype": plan.dtype, "engine": plan.engine, "torch": torch.__version__,
            "attention": attention, "forwards_per_phase": forwards, "phases": phases, "verdict": verdict(phases)}


def table(report: dict[str, Any]) -> str:
    cols = [("heap_in_use_kib_per_forward", "C heap"), ("rss_kib_per_forward", "RSS"),
            ("cuda_reserved_kib_per_forward", "CUDA reserved"), ("nvml_process_kib_per_forward", "NVML")]
    lines = [f"native memory per forward: {report['family']} {report['model']} on {report['device']} "
             f"{report['dtype']} (engine {report['engine']}), {report['forwards_per_phase']} forwards a phase",
             f"attention kernel for 8 × 32 tokens: {report['attention']['chosen']} (priority "
             f"{', '.join(report['attention']['priority_order'])}; cuDNN's enabled: "
             f"{report['attention']['enabled'].get('cudnn')})", "",
             f"{'phase':<8} {'shapes':>6} " + " ".join(f"{label + ' KiB/fwd':>19}" for _, label in cols)]
    for p in report["phases"].values():
        cells = [p["per_forward"].get(key) for key, _ in cols]
        lines.append(f"{p['phase']:<8} {p['distinct_shapes']:>6} "
                     + " ".join(f"{c:>19.2f}" if c is not None else f"{'n/a':>19}" for c in cells))
    lines += ["", f"verdict (C heap): {report['verdict']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.native_memory", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", action="store_true", help="tiny random-weight checkpoints (the soak's --demo models)")
    src.add_argument("--model", type=Path, help="a checkpoint directory of --family")
    p.add_argument("--family", choices=("embed", "cross"), default="embed", help="which model (default embed)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--engine", default="auto", help="auto, torch or deepspeed (default auto, as the server)")
    p.add_argument("--cudnn-attention", choices=("on", "off"), default="off",
                   help="the server's --cudnn-attention (default off: cuDNN's attention keeps a graph per shape)")
    p.add_argument("--forwards", type=positive_int, default=200, help="forwards per phase (default 200)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    a = p.parse_args(argv)
    report = run(a.family, a.model, a.device, a.engine, a.forwards, a.cudnn_attention)
    publish(a, report, table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
