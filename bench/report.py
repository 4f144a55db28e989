"""Plain-text tables for the bench and loadtest results (what goes to stdout). Pure Python."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt(x: Any, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) and scale == 1.0:
        return f"{x}{suffix}"
    return f"{x / scale:.{digits}f}{suffix}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True)))

    head = line(headers)
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def _tokens(s: dict[str, Any] | None) -> str:
    if not s or not s.get("count"):
        return "n/a"
    return (f"{s['count']} inputs, tokens min {fmt(s['min'], 0)} / p50 {fmt(s['p50'], 0)} / p95 {fmt(s['p95'], 0)}"
            f" / max {fmt(s['max'], 0)} (mean {fmt(s['mean'], 0)}, truncated {s['truncated']})")


def bench_text(r: dict[str, Any]) -> str:
    m = r["machine"]
    p = r["plan"]
    out = [f"Wenmo bench  {r['created_utc']}  device {p['device']}"
           f" ({m.get('gpu') or m['cpu']}, {m['cpu_count']} CPU cores)  size {r['options']['size']}"
           f"  seed {r['workload']['seed']}"]
    rates = ", ".join(f"{k} {fmt(v['flops_per_s'], 1, 1e9)} GFLOP/s (n={v['n']}, {v['threads']} threads)"
                      if v.get("ok") else f"{k} failed: {v.get('error')}" for k, v in r["matmul"].items())
    out.append(f"measured matmul rate (best of the run's start and end): {rates}")
    w = r["workload"]
    out.append(f"workload: {w['distribution']}")
    if "texts" in w:
        out.append(f"  texts: {_tokens(w['texts'])}")
        out.append(f"  naive subset: {_tokens(w.get('naive_subset'))}")
    if "pairs" in w:
        out.append(f"  pairs (query + passage: {w['pair_passages']}): {_tokens(w['pairs'])}")
        out.append(f"  naive pair subset: {_tokens(w.get('naive_pairs_subset'))}")
    out.append(f"Wenmo: dtype {p['wenmo_dtype']}, max_batch_tokens {p['max_batch_tokens']}, min_batch_fill "
               f"{p.get('min_batch_fill', 'auto')}, length_buckets {p.get('length_buckets', 'off')}, max_batch_size "
               f"{p['max_batch_size']}; library: fp32, batches of {p['library_batch_size']}; naive: fp32, 1 per "
               "forward, padded to the model maximum")
    gpu = p["device"].startswith("cuda")
    for family, f in r["families"].items():
        unit = f["unit"]
        out.append("")
        if f.get("skipped"):
            out.append(f"{family}: skipped — {f['skipped']}")
            continue
        arch = f["architecture"]
        out.append(f"{family} — {f['model']} ({arch.get('model_type')}, {arch.get('num_hidden_layers')} layers, "
                   f"hidden {arch.get('hidden_size')})")
        if family == "nlu":
            out.append(_nlu_table(f, gpu))
            continue
        headers = ["config", "n", f"{unit}/s", "tokens/s", "p50 ms", "p95 ms", "rows/fwd", "pad eff",
                   "peak RSS MiB", "run RSS MiB"]
        if gpu:
            headers += ["GPU alloc MiB", "NVML MiB"]
        headers += ["×naive", "×library", "GFLOP/s", "of matmul", "in fwd", "fwd matmul", "max |Δ|"]
        if family == "embed":
            headers.append("min cos")
        rows = []
        for c in f["configs"]:
            if not c.get("ok"):
                rows.append([c["name"], "failed: " + str(c.get("error"))[:60]] + [""] * (len(headers) - 2))
                continue
            row = [c["name"], f"{c['items']}{'*' if c.get('subset') else ''}", fmt(c["items_per_s"], 2),
                   fmt(c.get("tokens_per_s"), 0), fmt(c.get("latency_p50_ms")), fmt(c.get("latency_p95_ms")),
                   fmt(c.get("mean_batch_rows")), fmt(c.get("padding_efficiency"), 2),
                   fmt(c.get("peak_rss_mib"), 0), fmt(c.get("run_peak_rss_mib"), 0)]
            if gpu:
                row += [fmt(c.get("gpu_max_allocated_mib"), 0), fmt(c.get("gpu_nvml_mib"), 0)]
            row += [fmt(c.get("speedup_vs_naive"), 2, suffix="×"), fmt(c.get("speedup_vs_library"), 2, suffix="×"),
                    fmt(c.get("flops_per_s"), 1, 1e9), fmt(_pct(c.get("matmul_fraction")), 1, suffix="%"),
                    fmt(_pct(c.get("forward_share")), 0, suffix="%"),
                    fmt(_pct(c.get("forward_matmul_fraction")), 1, suffix="%"),
                    fmt((c.get("agreement") or {}).get("max_abs_diff"), 6) if c.get("agreement") else "ref"
                    if c["name"] in ("library",) else "n/a"]
            if family == "embed":
                row.append(fmt((c.get("agreement") or {}).get("min_cosine"), 5) if c.get("agreement") else
                           ("ref" if c["name"] == "library" else "n/a"))
            rows.append(row)
        out.append(table(headers, rows))
        if any(c.get("subset") for c in f["configs"]):
            out.append(f"  * naive ran on a length-stratified subset; its {unit}/s is per input")
        if f.get("padding_ceiling_vs_naive") is not None:
            out.append(f"  padding ceiling: doing only the real tokens' work at naive's FLOP/s would be "
                       f"{f['padding_ceiling_vs_naive']:.2f}× naive")
    if r.get("checks"):
        out.append("")
        out.append("issue targets (GTE, mixed lengths):")
        for c in r["checks"]:
            out.append(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['config']}: {c['target']}  (measured "
                       f"{fmt(c['value'], 2)})")
    for n in r.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out)


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _nlu_table(f: dict[str, Any], gpu: bool) -> str:
    headers = ["config", "task family", "n", "texts/s", "p50 ms", "p95 ms", "windows/req", "GFLOP/s", "of matmul",
               "peak RSS MiB"]
    if gpu:
        headers.append("GPU alloc MiB")
    rows = []
    for c in f["configs"]:
        if not c.get("ok"):
            rows.append([c["name"], "failed: " + str(c.get("error"))[:60]] + [""] * (len(headers) - 2))
            continue
        gpu_cell = [fmt(c.get("gpu_max_allocated_mib"), 0)] if gpu else []
        for fam, t in sorted(c.get("task_families", {}).items()):
            rows.append([c["name"], fam, str(t["items"]), fmt(t["items_per_s"], 2), fmt(t["latency_p50_ms"]),
                         fmt(t["latency_p95_ms"]), fmt(t.get("windows_per_request")), "", "", "",
                         *([""] if gpu else [])])
        rows.append([c["name"], "all", str(c["items"]), fmt(c["items_per_s"], 2), fmt(c.get("latency_p50_ms")),
                     fmt(c.get("latency_p95_ms")), "", fmt(c.get("flops_per_s"), 1, 1e9),
                     fmt(_pct(c.get("matmul_fraction")), 1, suffix="%"), fmt(c.get("peak_rss_mib"), 0), *gpu_cell])
    out = table(headers, rows)
    return out + ("\n  windows/req: forward windows per request; with random weights extraction finds many more spans "
                  "than a trained model, so multi-level schemas (relation, event) cost more windows than in production")


# ---- loadtest -------------------------------------------------------------------------------------------------
def loadtest_text(r: dict[str, Any]) -> str:
    out = [f"Wenmo loadtest  {r['created_utc']}  {r['url']}  p95 target {r['p95_target_ms']:g} ms"]
    headers = ["stage", "users", "requests", "ok", "busy", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"]
    rows = []
    skipped = []
    for name, st in r["stages"].items():
        if st.get("skipped"):
            skipped.append(f"{name}: skipped ({st['skipped']})")
            continue
        for step in st.get("steps", [st]):
            rows.append([name if step is st or step is st["steps"][0] else "", str(step["users"]),
                         str(step["requests"]), str(step["ok"]), str(step["busy"]), str(step["errors"]),
                         fmt(step["throughput_rps"], 2), fmt(step["latency_p50_ms"]), fmt(step["latency_p95_ms"]),
                         fmt(step["latency_p99_ms"])])
    out.append(table(headers, rows))
    out.extend(skipped)
    mixed = r["stages"].get("mixed", {})
    if mixed.get("by_kind"):
        out.append("")
        out.append(f"mixed stage by kind (mix {mixed.get('mix')}):")
        out.append(table(["kind", "requests", "ok", "busy", "errors", "p50 ms", "p95 ms"],
                         [[k, str(v["requests"]), str(v["ok"]), str(v["busy"]), str(v["errors"]),
                           fmt(v["latency_p50_ms"]), fmt(v["latency_p95_ms"])] for k, v in mixed["by_kind"].items()]))
    ramp = r["stages"].get("ramp", {})
    if not ramp.get("skipped") and "safe_concurrency" in ramp:
        out.append("")
        safe = ramp["safe_concurrency"]
        out.append(f"safe concurrency: {safe} users ({ramp['safe_rule']})" if safe is not None else
                   f"safe concurrency: none — the first ramp step already failed ({ramp['safe_rule']})")
    soak = r["stages"].get("soak", {})
    if soak.get("memory") is not None:
        out.append("")
        out.extend(soak_memory_lines(soak))
    ov = r.get("overhead", {})
    out.append("")
    if ov.get("overhead_ms") is None:
        out.append(f"server overhead (HTTP p50 − engine time, short single requests): n/a — {ov.get('note', '')}")
    else:
        out.append(f"server overhead (HTTP end-to-end − engine time, short single requests): p50 "
                   f"{fmt(ov['overhead_ms'], 2)} ms (HTTP p50 {fmt(ov['http_p50_ms'], 2)}, engine p50 "
                   f"{fmt(ov['engine_p50_ms'], 2)}); target ≤ {ov['target_ms']:g} ms: "
                   f"{'PASS' if ov['target_met'] else 'FAIL'}")
    for e in r.get("error_samples", [])[:5]:
        out.append(f"error sample: {e}")
    return "\n".join(out)


def soak_memory_lines(soak: dict[str, Any]) -> list[str]:
    """The soak's memory gauges (first → last) and the verdict per byte gauge: MiB per 1,000 requests after the
    warm-up and per 24 hours at the soak's rate, against the budget."""
    if not soak["memory"]:
        return ["soak memory: the server exposes no memory gauge in /metrics"]
    out = []
    for key, m in soak["memory"].items():
        out.append(f"soak memory {key}: {fmt(m['first'])} → {fmt(m['last'])} {m['unit']} (max {fmt(m['max'])}, "
                   f"{m['samples']} samples)")
    v = soak.get("verdict")
    if not v:
        return out
    settled = soak.get("settled_samples")
    if settled:
        out.append(f"soak memory: {len(settled)} settled samples (users paused, nothing in flight; "
                   f"{fmt(soak.get('paused_s', 0.0), 0)} s paused in all)")
    out.append(f"soak memory verdict ({v['rule']}; rate {fmt(v['rate_rps'], 1)} req/s under load):")
    rows, parts = [], []
    for key, g in v["gauges"].items():
        if "why" in g:
            rows.append([key, str(g["points"]), "", "", "", "", "", f"n/a: {g['why']}"])
            continue
        lo, hi = g["mib_per_24h_ci95"]
        row = [key, str(g["points"]), fmt(g["requests_fitted"]), fmt(g["mib_per_1k_requests"], 4),
               fmt(g.get("least_squares", {}).get("mib_per_1k_requests"), 4), fmt(g["mib_per_24h"], 1),
               f"{fmt(lo, 0)} … {fmt(hi, 0)}", g["verdict"]]
        (parts if g["verdict"] == "breakdown" else rows).append(row)
    out.append(table(["gauge", "samples fitted", "requests fitted", "MiB / 1k requests", "least squares",
                      "MiB / 24 h", "95 % interval", f"< {v['budget_mib_per_day']:g} MiB/24h"], rows))
    if parts:
        out.append("soak memory, where it is (fitted the same way, not judged; a count is per 1k requests and per "
                   "24 h in its own unit; C heap in_use growing: a leak; free growing: fragmentation):")
        out.append(table(["gauge", "samples fitted", "requests fitted", "per 1k requests", "least squares",
                          "per 24 h", "95 % interval", ""], parts))
    halves = [[key, str(h["points"]), fmt(h["requests_fitted"]), fmt(h["mib_per_1k_requests"], 4),
               fmt(g["mib_per_1k_requests"], 4), fmt(h["mib_per_24h"], 1),
               f"{fmt(h['mib_per_24h_ci95'][0], 0)} … {fmt(h['mib_per_24h_ci95'][1], 0)}", h["verdict"]]
              for key, g in v["gauges"].items() if "second_half" in g for h in (g["second_half"],)]
    if halves:
        out.append("soak memory, the later half of the fitted samples (not the verdict: a steady leak keeps its slope "
                   "here, a few bounded steps early in the window level off):")
        out.append(table(["gauge", "samples fitted", "requests fitted", "MiB / 1k requests", "whole window",
                          "MiB / 24 h", "95 % interval", "read alone"], halves))
    verdict = {"PASS": "PASS", "FAIL": "FAIL", None: "n/a (too few samples after the warm-up)",
               "INCONCLUSIVE": "INCONCLUSIVE (the budget lies inside a gauge's 95 % interval: the samples scatter "
                               "too much for this many requests; soak longer)"}[v.get("verdict")]
    out.append(f"soak memory: {verdict}")
    return out


def soak_text(r: dict[str, Any]) -> str:
    st = r["soak"]
    m = r["machine"]
    out = [f"Wenmo soak  {r['created_utc']}  models: {r['models']}  ({m['cpu_count']} CPU cores, Python {m['python']})",
           f"{st['users']} users, {fmt(st['elapsed_s'], 0)} s, {st['requests']} requests at "
           f"{fmt(st['attempted_rps'], 1)} req/s: {st['ok']} ok, {st['busy']} busy, {st['errors']} errors; "
           f"mix {st['mix']}"]
    out.append(table(["kind", "requests", "ok", "busy", "errors", "p50 ms", "p95 ms"],
                     [[k, str(v["requests"]), str(v["ok"]), str(v["busy"]), str(v["errors"]),
                       fmt(v["latency_p50_ms"]), fmt(v["latency_p95_ms"])] for k, v in st["by_kind"].items()]))
    out.append("")
    out.extend(soak_memory_lines(st))
    heap = r.get("heap")
    if heap:
        out.append("")
        out.append(f"traced Python heap (tracemalloc): {fmt(heap['traced_mib_before'], 1)} → "
                   f"{fmt(heap['traced_mib_after'], 1)} MiB over {heap['requests_between']} requests "
                   f"({fmt(heap['traced_mib_per_1k_requests'], 3)} MiB per 1k); the sites that grew most:")
        out.append(table(["KiB", "blocks", "where (innermost first)"],
                         [[fmt(g["bytes"] / 1024, 1), str(g["blocks"]), " ← ".join(_short(f) for f in g["stack"])]
                          for g in heap["grown_sites"]]))
    for e in r.get("error_samples", [])[:5]:
        out.append(f"error sample: {e}")
    if r.get("server_gone"):
        out.append(f"soak stopped early: {r['server_gone']}")
    out.append(f"soak: {'PASS' if r['pass'] else 'FAIL'} (the memory verdict, and no failed request: "
               f"{r['failures']} failed; refusals (HTTP 4xx) are not failures)")
    return "\n".join(out)


def _short(frame: str) -> str:
    """A stack frame without the site-packages or checkout prefix."""
    for marker in ("site-packages/", "/lib/python3."):
        if marker in frame:
            return frame.split(marker, 1)[1]
    return frame.split("/app/", 1)[-1] if "/app/" in frame else frame


# ---- bench-batching -------------------------------------------------------------------------------------------
def batching_text(r: dict[str, Any]) -> str:
    m, w, arch = r["machine"], r["workload"], r["model"].get("architecture") or {}
    on, off = (r["servers"][k].get("best") or {} for k in ("on", "off"))
    cmp_ = r["comparison"]
    out = [f"Wenmo bench-batching  {r['created_utc']}  device {r['device']} ({m['cpu']}, {m['cpu_count']} CPU cores)",
           f"model: {r['model']['what']} ({arch.get('model_type')}, {arch.get('num_hidden_layers')} layers, hidden "
           f"{arch.get('hidden_size')})",
           f"load: {w['users']} users × {w['requests_per_user']} texts each (+{w['warmup_per_user']} warm-up), one "
           f"text per request, back to back; query band {w['chars'][0]}–{w['chars'][1]} chars, seed {w['seed']}; "
           f"{w['compare_texts']} texts also sent alone to the idle server"]

    def both(key: str, digits: int = 1) -> list[str]:
        return [fmt(on.get(key), digits), fmt(off.get(key), digits)]

    def cap(mode: str) -> str:
        s = r["servers"][mode]
        return f"{fmt(s.get('max_concurrent'), 0)} ({s['max_concurrent_setting']})"

    rows = [
        ["texts/s", *both("texts_per_s", 2), fmt(cmp_["texts_per_s_ratio"], 2, suffix="×")],
        ["p50 ms", *both("latency_p50_ms"), fmt(cmp_["p50_ratio"], 2, suffix="×")],
        ["p95 ms", *both("latency_p95_ms"), fmt(cmp_["p95_ratio"], 2, suffix="×")],
        ["p99 ms", *both("latency_p99_ms"), fmt(cmp_["p99_ratio"], 2, suffix="×")],
        ["engine p50 ms", *both("engine_p50_ms"), ""],
        ["requests", fmt(on.get("requests")), fmt(off.get("requests")), ""],
        ["errors / busy", f"{fmt(on.get('errors'))} / {fmt(on.get('busy'))}",
         f"{fmt(off.get('errors'))} / {fmt(off.get('busy'))}", ""],
        ["max_concurrent", cap("on"), cap("off"), ""],
        ["min cos vs idle", fmt((on.get("vectors") or {}).get("min_cosine"), 6),
         fmt((off.get("vectors") or {}).get("min_cosine"), 6), ""],
    ]
    out.append(table(["", "on", "off", "on/off"], rows))
    across = cmp_["idle_on_vs_off"]
    out.append(f"idle vectors, on server vs off server: min cos {fmt(across['min_cosine'], 6)} over "
               f"{across['vectors_compared']} texts; lowest of every comparison: {fmt(cmp_['min_cosine'], 6)}")
    out.append("")
    out.append("issue targets:")
    for c in r["checks"]:
        digits = 6 if "cosine" in c["target"] else 2
        out.append(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['target']}  (measured {fmt(c['value'], digits)})")
    for mode in ("on", "off"):
        for e in (r["servers"][mode].get("best") or {}).get("error_samples", [])[:3]:
            out.append(f"error sample ({mode}): {e}")
    for n in r.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out)
