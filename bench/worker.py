"""One measurement in a fresh process: `python -m bench.worker JOB.json RESULT.json`.

A fresh process per configuration makes its peak RSS its own (nothing left over from the previous
configuration, no allocator cache shared between them) and confines a crash (out of memory, SIGILL) to
the configuration that caused it. The job says what to load and which inputs to run; the result holds
timings, token and FLOP counts, memory figures and a few outputs for the cross-configuration check.

Order inside the process: load the model → warm up on two inputs → reset the peak-RSS counter → run every
input once, timed end to end (tokenization, padding, forwards, pooling, copying results out) and per
forward (TimedForward); with `passes` > 1 the inputs run that many times and the fastest pass counts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from app.models.checkpoint import read_json
from bench import flops, memory


def _flop_kwargs(family: str, config: dict[str, Any]) -> dict[str, Any]:
    if family == "cross":
        labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
        return {"pooler": True, "num_labels": labels}
    if family == "nlu":
        return {"span_head": True}
    return {}


def _load(job: dict[str, Any], records: list) -> tuple[Any, dict[str, Any]]:  # noqa: ANN401
    kind, family = job["kind"], job["family"]
    model_dir = Path(job["model_dir"])
    if kind in ("naive", "library"):
        from bench.baselines import CrossEncoderBaseline, EmbeddingBaseline

        batch = 1 if kind == "naive" else int(job["library_batch_size"])
        cls = EmbeddingBaseline if family == "embed" else CrossEncoderBaseline
        return cls(model_dir, job["device"], records, batch), {"device": job["device"], "dtype": "fp32",
                                                               "engine": "transformers", "batch_size": batch}
    from bench import engine_bench

    kw = {"max_length": int(job["max_length"]), "max_batch_tokens": int(job["max_batch_tokens"]),
          "max_batch_size": int(job["max_batch_size"])}
    plan = engine_bench.make_plan(job["device"], job["dtype"], job["engine"], job["ds_config"],
                                  job.get("kernel_inject"), job.get("min_batch_fill", "auto"),
                                  job.get("cudnn_attention", "off"), job.get("length_buckets", "on"), **kw)
    if job.get("kernel_inject") and not plan.kernel_inject:  # a row named "inject" must not time a plain wrap
        raise RuntimeError("kernel injection asked for, but the plan turned it off: " + plan.why("kernel injection"))
    if family == "embed":
        runner = engine_bench.WenmoEmbedder(model_dir, plan, records, **kw)
    elif family == "cross":
        runner = engine_bench.WenmoCrossEncoder(model_dir, plan, records, **kw)
    else:
        runner = engine_bench.WenmoNlu(model_dir, plan, records, **kw)
    return runner, {"device": plan.device, "dtype": plan.dtype, "engine": plan.engine,
                    "kernel_inject": plan.kernel_inject, "cuda_graph": plan.cuda_graph, **kw}


def _call(runner: Any, family: str, items: list[Any]) -> list[Any]:  # noqa: ANN401
    if family == "cross":
        return runner.run([a for a, _ in items], [b for _, b in items])
    return runner.run(items)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    if job["kind"] == "matmul":
        from bench.matmul import measure

        return {"ok": True, **measure(job["device"], job["dtype"])}

    family = job["family"]
    workload = json.loads(Path(job["workload"]).read_text(encoding="utf-8"))
    pool = {"embed": workload["texts"], "cross": workload["pairs"], "nlu": workload["nlu"]}[family]
    items = [pool[i] for i in job["indices"]]
    on_cuda = job["device"].startswith("cuda")
    mem: dict[str, Any] = {"rss_start_mib": memory.rss_mib()}

    records: list = []
    t0 = time.perf_counter()
    runner, plan = _load(job, records)
    if on_cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    mem["rss_after_load_mib"] = memory.rss_mib()

    warm = items[: int(job.get("warmup", 2))]
    if warm:
        _call(runner, family, warm)
    records.clear()
    mem["load_peak_rss_mib"] = memory.lifetime_peak_rss_mib()  # loading and warm-up, before the reset

    peak = memory.RssPeak()
    peak.start()
    # `passes` timed passes over the same inputs; the fastest counts (best-of-N, as timeit does: on a shared
    # machine the slower passes measure the neighbours, not the code).
    seconds = float("inf")
    pass_seconds = []
    best_records: list = []
    outputs: list = []
    item_seconds: list[float] = []
    item_windows: list[int] = []
    for _ in range(max(1, int(job.get("passes", 1)))):
        records.clear()
        t0 = time.perf_counter()
        out = _call(runner, family, items)
        if on_cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        pass_seconds.append(dt)
        if dt < seconds:
            seconds, outputs, best_records = dt, out, list(records)
            item_seconds = list(getattr(runner, "seconds", []))
            item_windows = list(getattr(runner, "windows", []))
    records = best_records
    mem["run_peak_rss_mib"] = peak.stop()
    mem["run_peak_method"] = peak.method
    # Resetting VmHWM also resets getrusage's ru_maxrss (both read mm->hiwater_rss): combine the two phases.
    mem["lifetime_peak_rss_mib"] = max(mem["load_peak_rss_mib"], mem["run_peak_rss_mib"],
                                       memory.lifetime_peak_rss_mib())
    if on_cuda:
        mem.update(memory.gpu_memory(job["device"]))

    result: dict[str, Any] = {"ok": True, "items": len(items), "seconds": seconds, "pass_seconds": pass_seconds,
                              "load_s": load_s,
                              "plan": plan, "torch_threads": torch.get_num_threads(), "memory": mem}
    config = read_json(Path(job["model_dir"]), "config.json")
    kw = _flop_kwargs(family, config)
    if family == "nlu":
        result["item_ms"] = [s * 1000 for s in item_seconds]
        result["item_family"] = [it["family"] for it in items]
        result["item_windows"] = item_windows
        result["item_outputs"] = outputs
    result.update({
        "batch_ms": [r.seconds * 1000 for r in records],
        "batch_rows": [len(r.lengths) for r in records],
        "batch_width": [r.width for r in records],
        "real_tokens": sum(sum(r.lengths) for r in records),
        "padded_tokens": sum(len(r.lengths) * r.width for r in records),
        "useful_flops": sum(flops.useful_flops(config, r.lengths, **kw) for r in records),
        "executed_flops": flops.executed_flops(config, [(len(r.lengths), r.width) for r in records], **kw),
    })
    if family == "nlu":
        return result
    position = {i: k for k, i in enumerate(job["indices"])}
    result["probe"] = {str(i): outputs[position[i]] for i in job.get("probe", []) if i in position}
    return result


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("DeepSpeed", "deepspeed", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    try:
        result = run_job(job)
        status = 0
    except Exception as e:  # noqa: BLE001 - the parent reports it next to the other configurations
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        status = 1
    result_path.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
