"""Put a loaded torch module on its device and dtype, and wrap it with DeepSpeed when the plan says so.

`deepspeed.init_inference` runs on the CPU too (DeepSpeed's CPU accelerator), so tests exercise the same
wrapper that serves on a GPU. Kernel injection has policies for BERT-family layers only; a model family
that DeepSpeed has no policy for passes `kernel_inject_supported=False` and runs unwrapped kernels.
Imports the plan (app/engine/runtime.py), which never imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator

from app.engine import onednn
from app.engine.runtime import RuntimePlan, import_deepspeed
from app.errors import ModelUnavailableError

log = logging.getLogger(__name__)


def quantize_linear_layers(module):  # noqa: ANN001, ANN201
    """int8 dynamic quantisation of every nn.Linear, in place (no second copy of the weights).

    torch.ao.quantization is deprecated in favour of torchao, but still ships in the pinned torch and needs
    no extra package; its deprecation warnings are expected here and silenced.
    """
    import gc
    import warnings

    import torch

    # Every float tensor that survives quantisation (embeddings, LayerNorms, the Linear biases the packed
    # int8 weights keep) gets a private copy first: left pointing into the memory-mapped checkpoint, any one
    # of them keeps the whole mapping alive — and with it every float weight read while quantising, resident
    # (GTE-large after loading: 2.1 GiB RSS with them, 0.8 GiB without; the 2.1 GiB peak while quantising
    # stays, as every float weight is read once).
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, t in store.items():
                if t is None or not t.is_floating_point() or (isinstance(sub, torch.nn.Linear) and name == "weight"):
                    continue
                copy = t.detach().clone()
                store[name] = torch.nn.Parameter(copy, requires_grad=False) if store is sub._parameters else copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    # quantize_dynamic leaves a `qconfig` on modules whose observer factory is a closure over the original
    # float Linear; while any survives, that Linear's weight keeps the whole mapping alive (measured: 2.1 GiB
    # RSS after loading a 1.3 GB checkpoint, 0.8 GiB without). The replaced Linears are left in reference
    # cycles, hence the collect.
    for sub in module.modules():
        if "qconfig" in sub.__dict__:
            del sub.qconfig
    gc.collect()
    return module


# One TORCH_CUDA_ARCH_LIST entry: "9.0", "9.0a", "10.0f+PTX" (torch's architecture-specific suffixes a and f).
_ARCH_ENTRY = re.compile(r"(\d+\.\d+)[a-z](\+PTX)?")


def deepspeed_arch_list(value: str | None) -> str | None:
    """TORCH_CUDA_ARCH_LIST as DeepSpeed's JIT builder can read it, or None when it needs no change.

    DeepSpeed (0.19) sorts the entries with int() on each part, so "9.0a" fails its kernel-injection build with
    "invalid literal for int() with base 10: '0a'" — seen on the lent H200 (2026-11-27), whose image sets such a
    list. Without the suffix the op is built for sm_90, which runs on the same card (the suffix only adds
    Hopper-only instructions that DeepSpeed's kernels do not use)."""
    if not value:
        return None
    entries = value.replace(" ", ";").split(";")
    fixed = [(m.group(1) + (m.group(2) or "")) if (m := _ARCH_ENTRY.fullmatch(e.strip())) else e.strip()
             for e in entries if e.strip()]
    fixed = list(dict.fromkeys(fixed))  # "9.0;9.0a" → one 9.0
    joined = ";".join(fixed)
    return None if joined == ";".join(e.strip() for e in entries if e.strip()) else joined


@contextlib.contextmanager
def _arch_list_deepspeed_reads() -> Iterator[None]:
    """TORCH_CUDA_ARCH_LIST rewritten by deepspeed_arch_list while DeepSpeed builds its ops, restored after."""
    original = os.environ.get("TORCH_CUDA_ARCH_LIST")
    fixed = deepspeed_arch_list(original)
    if fixed is None or original is None:
        yield
        return
    log.info("event=cuda_arch_list original=%s deepspeed=%s reason=DeepSpeed's JIT build reads no arch suffix",
             original, fixed)
    os.environ["TORCH_CUDA_ARCH_LIST"] = fixed
    try:
        yield
    finally:
        os.environ["TORCH_CUDA_ARCH_LIST"] = original


def injection_misfit(config) -> str | None:  # noqa: ANN001
    """Why DeepSpeed's BERT kernels cannot take a model with this config, or None. Its BERT policy sizes the
    feed-forward at 4 × hidden (DEFAULT_INTERMEDIATE_SIZE) whatever the checkpoint says, and a model with another
    width fails the weight copy ("Merging tensors is not allowed here!": the tiny test models, 2 ×, on an H200,
    2026-11-27). The real GTE and StructBERT (1,024 → 4,096) fit."""
    hidden, inner = getattr(config, "hidden_size", None), getattr(config, "intermediate_size", None)
    if hidden is None or inner is None or inner == 4 * hidden:
        return None
    return (f"its feed-forward is {inner} wide, {inner / hidden:g} × hidden {hidden}; DeepSpeed's BERT kernels "
            "assume 4 ×")


def prepare_module(module, plan: RuntimePlan, *, kernel_inject_supported: bool = True):  # noqa: ANN001, ANN201
    """Return a callable module in eval mode on the plan's device and dtype (possibly a DeepSpeed engine)."""
    import torch

    # Process-wide, set by every model's preparation alike (one plan per process); no effect on the CPU.
    torch.backends.cuda.enable_cudnn_sdp(plan.cudnn_attention)
    # Before the first model's first forward: oneDNN reads its variable at its first primitive.
    if plan.onednn_cache is not None:
        onednn.apply(plan.onednn_cache)
    module.eval()
    module.requires_grad_(False)
    module.to(device=plan.device, dtype=plan.torch_dtype)
    if plan.quantized:
        module = quantize_linear_layers(module)
    if plan.engine != "deepspeed":
        return module

    deepspeed = import_deepspeed()

    inject = plan.kernel_inject and kernel_inject_supported
    if plan.kernel_inject and not kernel_inject_supported:
        log.info("deepspeed kernel_inject=off for %s: no DeepSpeed policy for this architecture",
                 type(module).__name__)
    why_not = injection_misfit(getattr(module, "config", None)) if inject else None
    if why_not:
        inject = False
        log.warning("deepspeed kernel_inject=off for %s: %s", type(module).__name__, why_not)
    try:
        with _arch_list_deepspeed_reads() if inject else contextlib.nullcontext():
            engine = deepspeed.init_inference(
                module,
                config={
                    "dtype": plan.torch_dtype,
                    "replace_with_kernel_inject": inject,
                    "enable_cuda_graph": plan.cuda_graph,
                },
            )
    except Exception as e:  # noqa: BLE001 - DeepSpeed raises many kinds; all mean "cannot wrap"
        raise ModelUnavailableError(
            f"DeepSpeed could not wrap {type(module).__name__} ({type(e).__name__}: {e}); "
            "start with --engine torch, or set inference.replace_with_kernel_inject=false in ds_config.json"
        ) from e
    assert isinstance(engine, torch.nn.Module)
    return engine
