"""Resident memory over thousands of forwards of ever-changing input shapes, padded up the length ladder and not.

Why: a soak of random texts sends the models a new (rows × padded length) on most forwards; the libraries under
torch keep state per shape (oneDNN's primitive cache on the CPU, 1,024 entries, least recently used out; cuDNN's
attention graphs on CUDA), and a cache that keeps evicting and rebuilding drifts the heap that holds it. This
runs the soak's shape traffic without HTTP, tokenizing or queueing: `--forwards` forwards of random rows (1–16)
× lengths (4–256 tokens), one fixed seed, through a tiny demo model's own `forward_batch` (the engine worker's path),
with a heap trim every 10 forwards (the server trims at most once a second). Each setting runs in a fresh child
process — the heap is the process's — one after the other: `length_buckets` on (the server's default:
app/engine/shapes.py) and off (padded to the longest row).

Every `--every` forwards, after a garbage collection and a trim, a child samples its resident memory, glibc's heap
in use and free-but-kept. The table gives each setting's samples, the distinct shapes its forwards met, the
seconds per forward, and the drift: the least-squares slope of resident memory per 1,000 forwards from the
second sample on (the first thousand forwards fill the caches).

    python -m bench.shape_churn [--family embed|cross] [--device cpu] [--forwards 8000] [--every 1000]
                                [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.allocator import libc_function, malloc_stats
from app.argtypes import positive_int
from app.config import Settings
from bench.cli import publish
from bench.native_memory import batch, build_adapter, sample
from bench.stats import slope

SETTINGS = ("on", "off")
SEED = 20261127
MAX_ROWS = 16
MAX_LENGTH = 256
TRIM_EVERY = 10


def plan_shapes(forwards: int, seed: int = SEED) -> list[tuple[int, int]]:
    """(rows, longest row's tokens) of each forward: the same list for both settings."""
    rnd = random.Random(seed)
    return [(rnd.randint(1, MAX_ROWS), rnd.randint(4, MAX_LENGTH)) for _ in range(forwards)]


def child(family: str, device: str, buckets: str, forwards: int, every: int) -> dict[str, Any]:
    """One setting's run, in this process (a child of `run`)."""
    trim = libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    settings = Settings(device=device, engine="torch", length_buckets=buckets)
    with tempfile.TemporaryDirectory(prefix="wenmo-shape-churn-") as tmp:
        adapter = build_adapter(family, None, settings, Path(tmp))
        tok = adapter.tokenizer
        ids = (tok.cls_token_id, tok.sep_token_id, tok.convert_tokens_to_ids("文"))
        met: set[tuple[int, int]] = set()
        hook = adapter.model.register_forward_pre_hook(
            lambda _m, args, kwargs: met.add(tuple((args[0] if args else kwargs["input_ids"]).shape)),
            with_kwargs=True)
        samples, spent = [], 0.0
        for i, (rows, length) in enumerate(plan_shapes(forwards), start=1):
            work = batch(rows, length, *ids)
            start = time.perf_counter()
            adapter.forward_batch(work)
            spent += time.perf_counter() - start
            if trim is not None and i % TRIM_EVERY == 0:
                trim(0)
            if i % every == 0:
                gc.collect()
                if trim is not None:
                    trim(0)
                samples.append({"forwards": i, **memory_sample(adapter.plan.is_cuda)})
        hook.remove()
    return {"length_buckets": buckets, "forwards": forwards, "distinct_shapes": len(met),
            "widths_met": sorted({width for _, width in met}),
            "ms_per_forward": spent * 1000 / forwards, "samples": samples, "drift_mib_per_1k": drift(samples),
            "nvml_drift_mib_per_1k": drift(samples, "nvml_process_mib")}


def memory_sample(cuda: bool) -> dict[str, float | None]:
    """bench.native_memory's sample (resident memory, glibc's heap in use; on CUDA torch's reserve and NVML's
    figure for this process) and glibc's free-but-kept bytes, in MiB."""
    heap = malloc_stats()
    return {**sample(cuda), "heap_free_mib": heap["free"] / 2**20 if heap else None}


def drift(samples: list[dict[str, Any]], key: str = "rss_mib") -> float | None:
    """`key`'s MiB per 1,000 forwards (resident memory by default), fitted from the second sample on (None with
    fewer than three samples, or where the gauge is missing)."""
    later = samples[1:]
    if len(later) < 2 or any(x.get(key) is None for x in later):
        return None
    s = slope([x["forwards"] for x in later], [x[key] for x in later])
    return None if s is None else s * 1000


def run(family: str, device: str, forwards: int, every: int) -> dict[str, Any]:
    runs = {}
    for buckets in SETTINGS:
        out = subprocess.run(
            [sys.executable, "-m", "bench.shape_churn", "--child", buckets, "--family", family, "--device", device,
             "--forwards", str(forwards), "--every", str(every)],
            capture_output=True, text=True, check=False, env=os.environ.copy())
        if out.returncode != 0:
            raise RuntimeError(f"the length_buckets={buckets} child failed ({out.returncode}): {out.stderr[-2000:]}")
        runs[buckets] = json.loads(out.stdout.strip().splitlines()[-1])
    on, off = runs["on"], runs["off"]
    return {"schema": "wenmo-shape-churn/1", "family": family, "model": "demo (tiny)", "device": device,
            "forwards": forwards, "every": every, "rows": [1, MAX_ROWS], "lengths": [4, MAX_LENGTH], "seed": SEED,
            "runs": runs, "time_ratio_on_to_off": on["ms_per_forward"] / off["ms_per_forward"]}


def table(report: dict[str, Any]) -> str:
    on, off = report["runs"]["on"], report["runs"]["off"]
    lines = [f"shape churn: {report['family']} {report['model']} on {report['device']}, {report['forwards']} forwards "
             f"of rows {report['rows'][0]}–{report['rows'][1]} × lengths {report['lengths'][0]}–"
             f"{report['lengths'][1]} (seed {report['seed']})", "",
             f"{'forwards':>8} {'RSS on':>8} {'RSS off':>8} {'free on':>8} {'free off':>8}  (MiB; free: glibc's "
             "heap, freed but kept)"]
    for a, b in zip(on["samples"], off["samples"], strict=True):
        cells = [a["rss_mib"], b["rss_mib"], a["heap_free_mib"], b["heap_free_mib"]]
        lines.append(f"{a['forwards']:>8} " + " ".join(f"{c:>8.1f}" if c is not None else f"{'n/a':>8}"
                                                      for c in cells))

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f}"

    lines += ["", f"{'length_buckets':<15} {'shapes met':>10} {'ms/forward':>10} {'RSS MiB per 1k forwards':>24} "
                  f"{'NVML MiB per 1k':>16}"]
    for r in (on, off):
        lines.append(f"{r['length_buckets']:<15} {r['distinct_shapes']:>10} {r['ms_per_forward']:>10.2f} "
                     f"{fmt(r['drift_mib_per_1k']):>24} {fmt(r.get('nvml_drift_mib_per_1k')):>16}")
    lines.append(f"time per forward, on / off: {report['time_ratio_on_to_off']:.2f}×")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shape_churn", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=("embed", "cross"), default="embed", help="which model (default embed)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--forwards", type=positive_int, default=8000, help="forwards per setting (default 8000)")
    p.add_argument("--every", type=positive_int, default=1000, help="a sample every this many forwards (default 1000)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    p.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)  # one setting's run (what `run` starts)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.family, a.device, a.child, a.forwards, a.every)), flush=True)
        return 0
    report = run(a.family, a.device, a.forwards, a.every)
    publish(a, report, table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
