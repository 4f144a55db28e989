"""The machine's measured matmul rate: the yardstick for "fraction of the machine's limit".

A square matmul large enough to be compute bound (n = 2048 on a CPU, 8192 on a GPU), repeated for at least
`min_time_s`; the best repetition counts (the attainable peak, not an average dragged down by noise).
On a GPU, fp32 is measured with TF32 off (true fp32); fp16 and bf16 run on the tensor cores. int8 (CPU) is
the kernel `--dtype int8` serves with: a dynamically quantised Linear (activations quantised per call).
Runs inside a measurement subprocess: a dtype the CPU cannot run (e.g. AMX advertised but not enabled by
the hypervisor: SIGILL) kills only that subprocess.
"""

from __future__ import annotations

import time
from typing import Any

from app.engine.wrapping import quantize_linear_layers

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}


def measure(device: str, dtype: str, n: int = 0, min_time_s: float = 0.5, max_reps: int = 50) -> dict[str, Any]:
    import torch

    on_cuda = device.startswith("cuda")
    n = n or (8192 if on_cuda else 2048)
    tdtype = getattr(torch, DTYPES[dtype])
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=tdtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=tdtype)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32 if on_cuda else None
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = False

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    matmul = torch.matmul
    if dtype == "int8":
        layer = torch.nn.Linear(n, n, bias=False)
        layer.weight.data.copy_(b.t())
        packed = quantize_linear_layers(torch.nn.Sequential(layer))

        def matmul(x, _w):  # noqa: ANN001, ANN202 - the same product through the int8 kernel
            return packed(x)

    try:
        matmul(a, b)  # warm-up: kernel selection, oneDNN/cuBLAS initialisation
        sync()
        best = float("inf")
        spent = 0.0
        reps = 0
        while reps < 3 or (spent < min_time_s and reps < max_reps):
            t0 = time.perf_counter()
            with torch.inference_mode():
                matmul(a, b)
            sync()
            dt = time.perf_counter() - t0
            best = min(best, dt)
            spent += dt
            reps += 1
    finally:
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return {"dtype": dtype, "n": n, "reps": reps, "best_s": best, "flops_per_s": 2 * n**3 / best,
            "threads": torch.get_num_threads()}
