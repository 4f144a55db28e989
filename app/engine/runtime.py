"""The runtime plan: device, dtype and engine, resolved from `auto` before any weights load.

The plan is logged in one line at start, together with what ds_config.json does at serving time, so an
operator can see from the log alone how the models run. torch and DeepSpeed are imported lazily: importing
this module costs nothing. The DeepSpeed import lives here, beside the probe that asks whether it works;
wrapping.py uses the same import to wrap a model, and this module imports nothing of the engine but dsconfig
and onednn (both pure).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass

from app.config import Settings
from app.engine.dsconfig import DsConfig
from app.engine.onednn import resolve_capacity
from app.errors import ConfigError

log = logging.getLogger(__name__)

# int8: dynamic quantisation (Linear weights int8, activations quantised per batch); the rest stays fp32.
_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}
# Batch fill floor (see batching.py). On a CPU every padded cell costs a full token and a forward has
# little fixed cost, so batches stay nearly full. On a GPU each forward also pays a fixed launch cost
# (hundreds of kernels for a 24-layer model) that a few padded cells are cheaper than; the GPU floor is
# a judgement, not yet a measurement.
FILL_CPU = 0.9
FILL_CUDA = 0.5


@dataclass(frozen=True)
class RuntimePlan:
    device: str  # "cpu" or "cuda:N"
    dtype: str  # "fp32" | "fp16" | "bf16"
    engine: str  # "torch" | "deepspeed"
    kernel_inject: bool
    cuda_graph: bool
    reasons: tuple[str, ...] = ()
    min_batch_fill: float = 0.0
    cudnn_attention: bool = False  # torch's cuDNN attention kernel allowed (process-wide; CUDA only)
    length_buckets: bool = True  # forwards pad up app/engine/shapes.py's ladder (a bounded set of input shapes)
    # oneDNN's primitive cache entries (app/engine/onednn.py); None on CUDA: left alone (0 is a size: no cache)
    onednn_cache: int | None = None

    @property
    def quantized(self) -> bool:
        return self.dtype == "int8"

    @property
    def torch_dtype(self):  # noqa: ANN201 - torch is imported lazily
        import torch

        return getattr(torch, _DTYPE_NAMES[self.dtype])

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def why(self, about: str) -> str:
        """The plan's reasons that mention `about` (e.g. "kernel injection"), joined: what to tell a caller who asked
        for something the plan turned off."""
        return "; ".join(r for r in self.reasons if about in r)

    def log_line(self, ds: DsConfig | None = None) -> str:
        parts = [
            f"plan device={self.device} dtype={self.dtype} engine={self.engine}",
            f"kernel_inject={self.kernel_inject} cuda_graph={self.cuda_graph} min_batch_fill={self.min_batch_fill:g} "
            f"cudnn_attention={'on' if self.cudnn_attention else 'off'} "
            f"length_buckets={'on' if self.length_buckets else 'off'}"
            + (f" onednn_cache={self.onednn_cache}" if self.onednn_cache is not None else ""),
            "inference_mode=on eval=on grad_checkpointing=off kv_cache=off",
        ]
        if self.reasons:
            parts.append("why=[" + "; ".join(self.reasons) + "]")
        if ds is not None:
            parts.append(f"ds_config={ds.path} " + " | ".join(f"{k}: {v}" for k, v in ds.effects().items()))
        return " ".join(parts)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_at_full_rate(capability: tuple[int, int]) -> bool:
    """Ampere (compute capability 8.0) and newer run bf16 matmuls at the fp16 rate; older cards emulate it
    slowly, which is why bf16 is chosen only where it "measures no worse" than fp16. `python -m app profile`
    asks the same question of a card it is only told about."""
    return capability[0] >= 8


def _bf16_supported(device: str) -> bool:
    import torch

    return bf16_at_full_rate(tuple(torch.cuda.get_device_capability(device)))


_CPU_DTYPE_PROBE = """
import torch
dtype = getattr(torch, {name!r})
x = torch.randn(256, 1024).to(dtype)
layer = torch.nn.Linear(1024, 1024).to(dtype)
if {quantize!r}:  # int8: the kernels dynamic quantisation runs
    layer = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(layer), {{torch.nn.Linear}}, dtype=torch.qint8)
with torch.inference_mode():
    layer(x).float().sum().item()
"""


def _cpu_dtype_works(dtype: str) -> str | None:
    """Run one Linear layer in `dtype` on the CPU in a child process; None if it works, else why not.

    A child, because the failure seen in practice is not an exception: on a VM whose CPU advertises AMX
    but whose hypervisor does not enable it, oneDNN's bf16 kernels die with SIGILL and take the process
    with them — at the first request, not at start, unless it is probed here.
    """
    import subprocess
    import sys

    code = _CPU_DTYPE_PROBE.format(name=_DTYPE_NAMES[dtype], quantize=dtype == "int8")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, text=True)
    except subprocess.TimeoutExpired:
        return "the probe did not finish in 120 s"
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        import signal

        return f"a {dtype} matmul on this CPU kills the process ({signal.Signals(-proc.returncode).name})"
    return f"a {dtype} matmul on this CPU fails: {proc.stderr.strip().splitlines()[-1:]}"


def import_deepspeed():  # noqa: ANN201
    """Import DeepSpeed with its console output sent to stderr.

    DeepSpeed's logger binds a handler to stdout at import time; the CLI's stdout carries results (JSONL,
    CSV), so the first import happens with stdout pointing at stderr. On a machine without CUDA the CPU
    accelerator must be chosen before that import.
    """
    import contextlib
    import sys

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed
    return deepspeed


def _transformers_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("transformers")


def _deepspeed_importable() -> bool:
    try:
        import_deepspeed()
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def resolve_plan(
    device: str,
    dtype: str,
    engine: str,
    ds: DsConfig,
    *,
    cuda_available=_cuda_available,
    bf16_supported=_bf16_supported,
    deepspeed_importable=_deepspeed_importable,
    cpu_dtype_works=_cpu_dtype_works,
    transformers_version=_transformers_version,
    min_batch_fill: str | float = "auto",
    cudnn_attention: str = "off",
    length_buckets: str = "on",
    onednn_primitive_cache: str = "auto",
    max_batch_tokens: int = Settings.max_batch_tokens,  # the settings' defaults, for plans made without settings
    max_batch_size: int = Settings.max_batch_size,
    max_length: int = Settings.max_length,
    environ: MutableMapping[str, str] | None = None,
) -> RuntimePlan:
    """Turn the `auto` choices into a concrete plan. The probes are injectable so the rules are testable."""
    reasons: list[str] = []
    has_cuda = cuda_available()
    if device == "auto":
        device = "cuda:0" if has_cuda else "cpu"
        reasons.append("device auto: " + ("CUDA present" if has_cuda else "no CUDA, using CPU"))
    elif device.startswith("cuda"):
        if not has_cuda:
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
        device = "cuda:0" if device == "cuda" else device
    on_cuda = device.startswith("cuda")

    if dtype == "auto":
        if not on_cuda:
            dtype = "fp32"
            reasons.append("dtype auto: fp32 on CPU (half precision is slower there)")
        elif ds.bf16 is True or (ds.bf16 == "auto" and ds.fp16 is not True and bf16_supported(device)):
            dtype = "bf16"
            reasons.append("dtype auto: bf16 (GPU supports it at full rate; wider range than fp16)")
        elif ds.fp16 is not False:
            dtype = "fp16"
            reasons.append("dtype auto: fp16 on CUDA")
        else:
            dtype = "fp32"
            reasons.append("dtype auto: fp32 (ds_config disables fp16 and bf16)")
    elif dtype == "int8" and on_cuda:
        raise ConfigError("--dtype int8 is dynamic quantisation for the CPU; on CUDA use fp16, bf16 or auto")
    elif dtype in ("fp16", "bf16", "int8") and not on_cuda:
        why_not = cpu_dtype_works(dtype)
        if why_not:
            raise ConfigError(f"--dtype {dtype}: {why_not}; use --dtype fp32 (or auto) on this machine")
        reasons.append("dtype int8 on CPU: dynamic quantisation of the Linear layers (check accuracy: "
                       "`python -m app bench` reports agreement with fp32)" if dtype == "int8"
                       else f"dtype {dtype} on CPU: allowed, but usually slower than fp32")

    if engine == "auto":
        if on_cuda and deepspeed_importable():
            engine = "deepspeed"
            reasons.append("engine auto: deepspeed on CUDA")
        else:
            engine = "torch"
            reasons.append("engine auto: torch (DeepSpeed inference kernels need CUDA)")
    elif engine == "deepspeed" and not deepspeed_importable():
        raise ConfigError("--engine deepspeed: the deepspeed package cannot be imported; install it or use torch")

    kernel_inject = engine == "deepspeed" and on_cuda and ds.replace_with_kernel_inject
    transformers = transformers_version() if kernel_inject else ""
    if kernel_inject and int(transformers.split(".")[0]) >= 5:
        # Measured on an H200 (2026-11-27, DeepSpeed 0.19.8, transformers 5.17): the injected BERT layer returns a
        # tuple where transformers 5's encoder passes each layer's tensor on, so every forward failed
        # ("'tuple' object has no attribute 'size'") after a wrap that succeeded: the server would start and then
        # answer nothing. DeepSpeed's plain inference wrap still runs.
        kernel_inject = False
        reasons.append("kernel injection off: DeepSpeed's injected BERT layers return tuples that transformers 5's "
                       f"encoder cannot take (transformers {transformers} here; it needs < 5)")
    cuda_graph = engine == "deepspeed" and on_cuda and ds.enable_cuda_graph
    if engine == "deepspeed" and not on_cuda and (ds.replace_with_kernel_inject or ds.enable_cuda_graph):
        reasons.append("kernel injection and CUDA graphs need CUDA: off on CPU")
    if min_batch_fill == "auto":
        fill = FILL_CUDA if on_cuda else FILL_CPU
        reasons.append(f"min_batch_fill auto: {fill:g} on {'CUDA' if on_cuda else 'CPU'}")
    else:
        fill = float(min_batch_fill)
    cudnn = on_cuda and cudnn_attention == "on"
    if on_cuda and not cudnn:
        # The demo soak on an H200 kept ~145 KiB of C heap per request; cuDNN's attention keeps a graph per shape.
        reasons.append("cudnn_attention off: cuDNN's attention kernel keeps a compiled graph per input shape")
    buckets = length_buckets == "on"
    if not buckets:
        reasons.append("length_buckets off: forwards pad to their longest row, so every length seen is a new shape")
    onednn = None
    if not on_cuda:
        onednn, why = resolve_capacity(onednn_primitive_cache, length_buckets=buckets, max_length=max_length,
                                       max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                                       environ=environ)
        reasons.append(why)
    return RuntimePlan(device, dtype, engine, kernel_inject, cuda_graph, tuple(reasons), fill, cudnn, buckets, onednn)
