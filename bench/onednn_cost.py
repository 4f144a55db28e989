"""What oneDNN's primitive cache saves in time on the CPU: the same forwards with the cache at 0 and at a size that
holds every shape, each in a fresh child process (oneDNN reads its size once, at its first primitive).

Why: a soak with the cache off kept the C heap flat and ~200 MiB smaller (README, "Memory over days"); what it
costs is the GELU primitive compiled again on every forward, per layer. This times exactly that: a BERT of
`--layers` layers at `--width` (random weights; the real models are 1,024 wide, the demo ones 32), `--shapes`
random (rows, padded length) pairs from the length ladder, run once to fill the cache, then `--passes` more
times; a setting's time is its fastest pass. The settings alternate, `--rounds` times each, so a noisy machine
slows both alike; the table gives each setting's best and the ratio. `--max-rows` and `--max-length` keep to the
small shapes — a search box's one short query a request — where a compile costs most against the forward's work;
`--gelu-only` times the GELU alone on the feed-forward's (rows, length, 4 × width) tensors: the compile's own cost
per call, without the matmuls' noise around it.

    python -m bench.onednn_cost [--width 1024] [--layers 2] [--shapes 60] [--passes 5] [--rounds 3]
                                [--max-rows 16] [--max-length 128] [--gelu-only] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

from app.argtypes import positive_int
from bench.cli import publish

SETTINGS = (0, 8192)  # off (auto's choice); room for every shape of a server's ladder (6,063: onednn.shapes_bound)
ROWS = (1, 2, 3, 4, 6, 8, 12, 16)
RUNGS = (8, 16, 24, 32, 48, 64, 96, 128)


def shape_choices(max_rows: int, max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The row counts and ladder lengths a pass draws from, up to the limits (at least the smallest of each)."""
    rows = tuple(r for r in ROWS if r <= max_rows) or ROWS[:1]
    return rows, tuple(n for n in RUNGS if n <= max_length) or RUNGS[:1]


def child(width: int, layers: int, shapes: int, passes: int, max_rows: int = ROWS[-1],
          max_length: int = RUNGS[-1], gelu_only: bool = False) -> dict[str, Any]:
    """One setting, in this process (its environment holds oneDNN's size): ms per forward (or per GELU call),
    fastest pass."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    rng = random.Random(1)
    rows, rungs = shape_choices(max_rows, max_length)
    batch = [(rng.choice(rows), rng.choice(rungs)) for _ in range(shapes)]
    if gelu_only:
        inputs = [torch.randn(r, n, 4 * width) for r, n in batch]
        calls = [lambda x=x: torch.nn.functional.gelu(x) for x in inputs]
    else:
        cfg = BertConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=max(1, width // 64),
                         intermediate_size=4 * width, vocab_size=1000)
        model = BertModel(cfg, add_pooling_layer=False).eval()
        calls = [lambda r=r, n=n: model(torch.ones(r, n, dtype=torch.long)) for r, n in batch]

    def one_pass() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for call in calls:
                call()
        return time.perf_counter() - started

    one_pass()  # every shape new: fills the cache where there is one
    best = min(one_pass() for _ in range(passes))
    return {"ms_per_forward": 1000 * best / shapes, "distinct_shapes": len(set(batch))}


def run(width: int, layers: int, shapes: int, passes: int, rounds: int, max_rows: int = ROWS[-1],
        max_length: int = RUNGS[-1], gelu_only: bool = False) -> dict[str, Any]:
    runs: dict[int, list[float]] = {s: [] for s in SETTINGS}
    distinct = 0
    for _ in range(rounds):
        for setting in SETTINGS:
            env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(setting)}
            out = subprocess.run([sys.executable, "-m", "bench.onednn_cost", "--child", "--width", str(width),
                                  "--layers", str(layers), "--shapes", str(shapes), "--passes", str(passes),
                                  "--max-rows", str(max_rows), "--max-length", str(max_length),
                                  *(["--gelu-only"] if gelu_only else [])],
                                 capture_output=True, text=True, env=env, timeout=3600, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[setting].append(result["ms_per_forward"])
            distinct = result["distinct_shapes"]
    best = {s: min(v) for s, v in runs.items()}
    return {"schema": "wenmo-onednn-cost/1", "width": width, "layers": layers, "shapes": shapes,
            "distinct_shapes": distinct, "passes": passes, "rounds": rounds, "max_rows": max_rows,
            "max_length": max_length, "timed": "gelu" if gelu_only else "forward",
            "ms_per_forward": {str(s): v for s, v in runs.items()},
            "best_ms_per_forward": {str(s): b for s, b in best.items()},
            "off_over_cached": best[SETTINGS[0]] / best[SETTINGS[1]]}


def table(report: dict[str, Any]) -> str:
    gelu = report.get("timed") == "gelu"
    what = f"GELU on (rows, length, {4 * report['width']})" if gelu else f"BERT {report['layers']} layers × width " \
        f"{report['width']}"
    unit = "GELU call" if gelu else "forward"
    lines = [f"oneDNN's primitive cache, off against {SETTINGS[1]}: {what}, {report['distinct_shapes']} shapes "
             f"(rows ≤ {report.get('max_rows', ROWS[-1])}, length ≤ {report.get('max_length', RUNGS[-1])}), fastest "
             f"of {report['passes']} passes, {report['rounds']} rounds each", "",
             f"{'cache':>6}  {'best ms/' + unit:>19}  every round"]
    for setting, times in report["ms_per_forward"].items():
        lines.append(f"{setting:>6}  {report['best_ms_per_forward'][setting]:19.3f}  "
                     + " ".join(f"{t:.3f}" for t in times))
    best = report["best_ms_per_forward"]
    extra_us = 1000 * (best[str(SETTINGS[0])] - best[str(SETTINGS[1])]) / (1 if gelu else report["layers"])
    lines.append(f"time per {unit}, cache off / cached: {report['off_over_cached']:.2f}× "
                 f"({extra_us:+.0f} µs per {unit if gelu else 'layer'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.onednn_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=positive_int, default=1024, help="hidden size (default 1024, the real models')")
    p.add_argument("--layers", type=positive_int, default=2, help="encoder layers (default 2)")
    p.add_argument("--shapes", type=positive_int, default=60, help="random ladder shapes a pass runs (default 60)")
    p.add_argument("--passes", type=positive_int, default=5, help="timed passes after the first (default 5)")
    p.add_argument("--rounds", type=positive_int, default=3, help="child processes per setting (default 3)")
    p.add_argument("--max-rows", type=positive_int, default=ROWS[-1],
                   help=f"rows a forward may have at most (default {ROWS[-1]}; 1: one text a forward)")
    p.add_argument("--max-length", type=positive_int, default=RUNGS[-1],
                   help=f"padded length a forward may have at most (default {RUNGS[-1]}; 32: short queries)")
    p.add_argument("--gelu-only", action="store_true",
                   help="time the GELU alone on (rows, length, 4 × width) tensors, not the whole forward")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one setting's run (what `run` starts)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.width, a.layers, a.shapes, a.passes, a.max_rows, a.max_length, a.gelu_only)),
              flush=True)
        return 0
    report = run(a.width, a.layers, a.shapes, a.passes, a.rounds, a.max_rows, a.max_length, a.gelu_only)
    publish(a, report, table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
