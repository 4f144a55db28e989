"""`wenmo bench-tune`: what ZeRO-2 costs and saves when tuning, side by side in one run.

- CPU (always): optimizer steps/s of the embedder trained with plain torch AdamW against the same model, batches
  and optimizer under DeepSpeed ZeRO-2 (app/tune's own plan from ds_config.json).
- CUDA (when present, else skipped with the reason): peak GPU memory (torch.cuda.max_memory_allocated) and
  steps/s of plain AdamW, ZeRO-2, and ZeRO-2 with `offload_optimizer: cpu`, on the full-size replica (--size
  full): the seed's claim that "ZeRO-2 cuts memory by 37%" measured where it can apply. On one GPU ZeRO-2 has
  nothing to partition across ranks; the offload moves the optimizer state (12 bytes a parameter) to the host.

Each configuration runs in a fresh child process (`python -m bench.tuning --child …`), so peaks and DeepSpeed's
process group do not carry over. Prints a table, writes JSON with --json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.argtypes import positive_int
from app.config import REPO_ROOT, Settings
from app.engine.runtime import import_deepspeed
from app.tune.trainable import cosent_loss, load_trainable
from app.tune.trainplan import distributed_env, read_raw, training_config
from bench.suite import build_fixture, replica_root

CPU_CONFIGS = ("torch-adamw", "zero2")
GPU_CONFIGS = ("torch-adamw", "zero2", "zero2-offload")


def add_tune_bench_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    b = sub.add_parser("bench-tune", parents=[common],
                       help="tuning: steps/s of ZeRO-2 vs plain torch AdamW (CPU); peak GPU memory of plain AdamW vs "
                            "ZeRO-2 vs ZeRO-2 + optimizer offload (CUDA)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    b.add_argument("--size", choices=("tiny", "full"), default="tiny", help="tiny checkpoint or full-size replica")
    b.add_argument("--tune-steps", type=positive_int, default=20,
                   help="timed optimizer steps per configuration (default 20)")
    b.add_argument("--tune-batch", type=positive_int, default=16, help="pairs per step (default 16)")
    b.add_argument("--tune-tokens", type=positive_int, default=64, help="tokens per text (default 64)")
    b.add_argument("--devices", dest="tune_devices", choices=("cpu,cuda", "cpu", "cuda"), default="cpu,cuda",
                   help="where to measure: the CPU's steps/s, the GPU's peak memory, or both (default cpu,cuda; "
                        "cuda is skipped with its reason where there is none). On a GPU machine `cuda` alone "
                        "leaves out the CPU's minutes of full-size steps")
    b.add_argument("--models-dir", dest="bench_models_dir", default="", help="where replicas are built and kept "
                   "(default <state dir>/bench-models)")
    b.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    return b


def run_tune_bench(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    # The same replica `bench` measures (and builds once): <models dir>/<size>/gte.
    model_dir = build_fixture("embed", replica_root(args.bench_models_dir, settings.state_dir, args.size),
                              args.size == "full")
    common = {"model_dir": str(model_dir), "steps": args.tune_steps, "batch": args.tune_batch,
              "tokens": args.tune_tokens, "ds_config": settings.ds_config}
    results: dict[str, Any] = {"size": args.size, "steps": args.tune_steps, "batch": args.tune_batch,
                               "tokens": args.tune_tokens, "cpu": {}, "cuda": None}
    devices = args.tune_devices.split(",")
    if "cpu" in devices:
        for name in CPU_CONFIGS:
            results["cpu"][name] = child({**common, "config": name, "device": "cpu"})
    if "cuda" not in devices:
        results["cuda_skipped"] = "not asked for (--devices cpu)"
    elif torch.cuda.is_available():
        results["cuda"] = {name: child({**common, "config": name, "device": "cuda:0"}) for name in GPU_CONFIGS}
    else:
        results["cuda_skipped"] = "no CUDA device here: the peak-memory comparison needs a GPU"
    print(table(results), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


def child(spec: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    r = subprocess.run([sys.executable, "-m", "bench.tuning", "--child", json.dumps(spec)], capture_output=True,
                       text=True, cwd=REPO_ROOT, env=env, timeout=3600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"error": failure_line(r.stderr, r.returncode), "stderr_tail": r.stderr[-4000:]}
    return json.loads(lines[-1])


def failure_line(stderr: str, returncode: int) -> str:
    """The line that says why a child failed: the exception of its last traceback, else the last line that is not
    a warning (NCCL and DeepSpeed print warnings at exit, after the error), else the exit status."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if "Traceback (most recent call last):" in lines:
        after = lines[len(lines) - 1 - lines[::-1].index("Traceback (most recent call last):"):]
        raised = [ln for ln in after if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", ln)]
        if raised:
            return raised[-1][-500:]
    quiet = [ln for ln in lines if "warn" not in ln.lower()]
    return (quiet[-1] if quiet else f"exit status {returncode}, no error printed")[-500:]


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this process: warm-up step, then `steps` timed steps."""
    import torch

    device, config = spec["device"], spec["config"]
    raw = read_raw(spec["ds_config"])
    if config == "zero2-offload":
        raw["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    elif "zero_optimization" in raw:
        raw["zero_optimization"].pop("offload_optimizer", None)
    plan = training_config(raw, device=device, bf16_ok=lambda d: torch.cuda.get_device_capability(d)[0] >= 8,
                           batch_size=spec["batch"])
    t = load_trainable("embed", Path(spec["model_dir"]))
    gen = torch.Generator().manual_seed(0)
    vocab = t.module.bert.config.vocab_size
    batches = [(torch.randint(5, vocab, (2 * spec["batch"], spec["tokens"]), generator=gen),
                torch.rand(spec["batch"], generator=gen).round()) for _ in range(spec["steps"] + 1)]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.dtype)
    if config == "torch-adamw":
        model = t.module.to(device)
        params = dict(plan.config["optimizer"]["params"])
        params.pop("torch_adam", None)
        optimizer = torch.optim.AdamW(model.parameters(), **params)

        def step(ids, labels):  # noqa: ANN001, ANN202
            with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                loss = _loss(model, ids.to(device), labels.to(device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        os.environ.update(distributed_env())
        deepspeed = import_deepspeed()
        with contextlib.redirect_stdout(sys.stderr):
            deepspeed.init_distributed(dist_backend="nccl" if device.startswith("cuda") else "gloo")
            engine, _, _, _ = deepspeed.initialize(model=t.module, model_parameters=list(t.module.parameters()),
                                                   config=plan.config)

        def step(ids, labels):  # noqa: ANN001, ANN202
            loss = _loss(engine, ids.to(engine.device), labels.to(engine.device))
            engine.backward(loss)
            engine.step()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step(*batches[0])  # warm-up: allocations, kernels, the optimizer state
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for ids, labels in batches[1:]:
        step(ids, labels)
    sync()
    seconds = time.perf_counter() - start
    out = {"steps_per_s": spec["steps"] / seconds, "seconds": seconds, "precision": plan.dtype,
           "params": sum(p.numel() for p in t.module.parameters())}
    if config != "torch-adamw":
        out["zero_stage"] = int(engine.zero_optimization_stage())
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _loss(model: Any, ids: Any, labels: Any) -> Any:  # noqa: ANN401
    import torch
    import torch.nn.functional as F  # noqa: N812

    vectors = model(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids)).float()
    half = len(labels)
    return cosent_loss(F.cosine_similarity(vectors[:half], vectors[half:], dim=-1), labels.float())


def table(results: dict[str, Any]) -> str:
    lines = [f"bench-tune: embedder ({results['size']}), {results['steps']} steps of {results['batch']} pairs × "
             f"{results['tokens']} tokens", "", f"{'device':<6} {'configuration':<15} {'steps/s':>9} "
             f"{'vs torch':>9} {'peak GPU MiB':>13} {'vs torch':>9}"]
    for device in ("cpu", "cuda"):
        rows = results.get(device) or {}
        base = rows.get("torch-adamw", {})
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"{device:<6} {name:<15} error: {r['error']}")
                continue
            speed = r["steps_per_s"] / base["steps_per_s"] if base.get("steps_per_s") else float("nan")
            peak = r.get("peak_gpu_mib")
            mem = peak / base["peak_gpu_mib"] if peak and base.get("peak_gpu_mib") else None
            lines.append(f"{device:<6} {name:<15} {r['steps_per_s']:>9.2f} {speed:>8.2f}× "
                         f"{(f'{peak:,.0f}' if peak else '—'):>13} {(f'{mem:.2f}×' if mem else '—'):>9}")
    if results.get("cuda_skipped"):
        lines.append(f"cuda   skipped: {results['cuda_skipped']}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    print(json.dumps(measure(json.loads(parser.parse_args().child))))
