"""Batching across requests, on against off, in one process and without HTTP.

`bench-batching` (bench/batching.py) measures the switch through two real servers; this measures the engine part of
the same comparison where the web stack is not installed (the GPU machines this project is lent have no gradio):
the Service is built as a server builds it (app/composition.build_service, one engine queue per model), and
`--users` threads each embed `--requests` single texts of the query band back to back, closed loop. The same text
pool, the same targets (bench.batching.checks) and the same cosine check (vectors under load against each text's
vector embedded alone on the idle service) as bench-batching; latency is per call of Service.embed (queueing and
the forward, not HTTP).

    python -m bench.batching_inprocess --model DIR [--device cuda] [--users 64] [--requests 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.argtypes import positive_int
from app.composition import build_service, make_plan
from app.config import Settings
from app.engine.limiter import ConcurrencyLimiter
from app.engine.runtime import RuntimePlan
from bench.batching import checks, cosine, pool_index, text_pool
from bench.cli import publish
from bench.stats import percentile, ratio


def measure(settings: Settings, plan: RuntimePlan, mode: str, users: int, requests: int, compare_texts: int,
            pool: list[str]) -> dict[str, Any]:
    settings = dataclasses.replace(settings, batch_across_requests=mode)
    # Every user admitted at once: the comparison is of the engine's batching, not of the cap.
    service = build_service(settings, ["embed"], limiter=ConcurrencyLimiter(max_concurrent=users, max_queue=users),
                            plan=plan)
    try:
        refs = {i: service.embed([pool[i]]).vectors[0] for i in range(compare_texts)}  # idle, one at a time
        for u in range(min(users, 8)):  # warm-up: kernels and allocator, not counted
            service.embed([pool[u]])
        latencies: list[float] = []
        errors: list[str] = []
        min_cos = 1.0
        lock = threading.Lock()

        def user(u: int) -> None:
            nonlocal min_cos
            for r in range(requests):
                k = pool_index(u, r, users, len(pool))
                start = time.perf_counter()
                try:
                    vec = service.embed([pool[k]]).vectors[0]
                except Exception as e:  # noqa: BLE001 - counted and shown, the load goes on
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    if k in refs:
                        min_cos = min(min_cos, cosine(list(map(float, vec)), list(map(float, refs[k]))) or -1.0)

        threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        service.close()
    ms = [x * 1000 for x in latencies]
    return {"mode": mode, "texts_per_s": len(latencies) / elapsed, "seconds": elapsed, "answered": len(latencies),
            "errors": len(errors), "busy": 0, "error_samples": sorted(set(errors))[:5],
            "latency_p50_ms": percentile(ms, 50), "latency_p95_ms": percentile(ms, 95),
            "latency_p99_ms": percentile(ms, 99), "min_cosine_vs_idle": min_cos}


def run(model: Path, device: str, users: int, requests: int, compare_texts: int, seed: int) -> dict[str, Any]:
    settings = Settings(device=device, embed_model=str(model))
    plan = make_plan(settings)
    pool = text_pool(seed)
    on = measure(settings, plan, "on", users, requests, compare_texts, pool)
    off = measure(settings, plan, "off", users, requests, compare_texts, pool)
    min_cos = min(on["min_cosine_vs_idle"], off["min_cosine_vs_idle"])
    return {"schema": "wenmo-bench-batching-inprocess/1", "model": str(model), "device": plan.device,
            "dtype": plan.dtype, "users": users,
            "requests_per_user": requests, "on": on, "off": off,
            "ratio_texts_per_s": ratio(on["texts_per_s"], off["texts_per_s"]),
            "checks": checks(on, off, min_cos, plan.device, plan.dtype)}


def table(report: dict[str, Any]) -> str:
    lines = [f"batching across requests, in process ({report['device']} {report['dtype']}, {report['users']} users × "
             f"{report['requests_per_user']} single texts)", "",
             f"{'mode':<5} {'texts/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'min cos':>9}"]
    for mode in ("on", "off"):
        r = report[mode]
        lines.append(f"{mode:<5} {r['texts_per_s']:>9.1f} {r['latency_p50_ms']:>8.1f} {r['latency_p95_ms']:>8.1f} "
                     f"{r['latency_p99_ms']:>8.1f} {r['errors']:>6} {r['min_cosine_vs_idle']:>9.6f}")
    lines.append("")
    lines += [f"  {'PASS' if c['pass'] else 'FAIL'}  {c['target']}  (measured {c['value']})" for c in report["checks"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batching_inprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="a GTE checkpoint directory (a replica will do)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--users", type=positive_int, default=32, help="concurrent users (threads; default 32)")
    p.add_argument("--requests", type=positive_int, default=20, help="single-text calls per user (default 20)")
    p.add_argument("--compare-texts", type=positive_int, default=16, help="texts also embedded alone (default 16)")
    p.add_argument("--seed", type=int, default=0, help="text seed (default 0)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    a = p.parse_args(argv)
    report = run(a.model, a.device, a.users, a.requests, a.compare_texts, a.seed)
    publish(a, report, table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
