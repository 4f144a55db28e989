"""GPU-only checks: half precision against fp32, DeepSpeed with kernel injection. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU"),
]

TEXTS = ["北京天安门", "我喜欢这部电影，音乐很好", "上海", "今天天气很好，我们去公园" * 10]


def plan(ds, dtype, engine, kernel_inject=False):
    import dataclasses

    from app.engine.runtime import resolve_plan

    ds = dataclasses.replace(ds, replace_with_kernel_inject=kernel_inject)
    return resolve_plan("cuda:0", dtype, engine, ds)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_embeddings_close_to_fp32(tiny_dirs, ds, dtype):
    from app.models.embedding import EmbeddingAdapter

    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    ref = EmbeddingAdapter(tiny_dirs["embed"], plan(ds, "fp32", "torch")).embed(TEXTS).vectors
    got = EmbeddingAdapter(tiny_dirs["embed"], plan(ds, dtype, "torch")).embed(TEXTS).vectors
    assert got.dtype == np.float32
    assert np.sum(ref * got, axis=1).min() >= (0.999 if dtype == "fp16" else 0.995)


@pytest.fixture(scope="module")
def injectable_dirs(tmp_path_factory):
    """Tiny models with the real ones' 4 × feed-forward: DeepSpeed's BERT kernels assume it (the shared tiny
    models' 2 × failed its weight copy on an H200, and prepare_module now skips injection for them)."""
    from app.models.fixtures import build_gte, build_structbert

    root = tmp_path_factory.mktemp("injectable")
    return {"embed": build_gte(root / "gte", feed_forward=128),
            "cross": build_structbert(root / "structbert", feed_forward=128)}


def test_deepspeed_kernel_injection_matches_torch(injectable_dirs, ds):
    from app.models.cross_encoder import CrossEncoderAdapter
    from app.models.embedding import EmbeddingAdapter

    injected = plan(ds, "fp16", "deepspeed", kernel_inject=True)
    if not injected.kernel_inject:  # transformers 5: the plan turns it off (app/engine/runtime.py says why)
        pytest.skip(injected.why("kernel injection"))
    dirs = injectable_dirs
    ref = EmbeddingAdapter(dirs["embed"], plan(ds, "fp16", "torch")).embed(TEXTS).vectors
    got = EmbeddingAdapter(dirs["embed"], injected).embed(TEXTS).vectors
    assert np.sum(ref * got, axis=1).min() >= 0.995
    a = ["北京"] * 3
    b = ["北京", "上海", "电影"]
    p_ref = CrossEncoderAdapter(dirs["cross"], plan(ds, "fp16", "torch")).score(a, b).scores
    p_ds = CrossEncoderAdapter(dirs["cross"], injected).score(a, b).scores
    assert np.allclose(p_ref, p_ds, atol=5e-3)



def test_metrics_give_this_processs_share_of_the_gpu():
    """/metrics on a GPU: `wenmo_gpu_process_memory_bytes` is what NVML attributes to this process — at least what
    torch holds, at most the card's used memory (which the soak then shows, not judges)."""
    from prometheus_client.parser import text_string_to_metric_families

    from app.config import Settings
    from app.engine.limiter import ConcurrencyLimiter
    from app.web.context import ServerContext
    from app.web.lifecycle import Lifecycle
    from app.web.server import ServerStateCollector

    block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    ctx = ServerContext(settings=Settings(), lifecycle=Lifecycle(), limiter=ConcurrencyLimiter(1, 1))
    ctx.metrics.add_collector(ServerStateCollector(ctx))
    body, _ = ctx.metrics.render()
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value
         for family in text_string_to_metric_families(body.decode()) for x in family.samples}
    card = s[("wenmo_gpu_memory_used_bytes", (("gpu", "0"),))]
    own = s.get(("wenmo_gpu_process_memory_bytes", ()))
    if own is None:
        pytest.skip("NVML lists no per-process memory for this PID here (MIG, or a container's PID namespace)")
    assert block.numel() <= own <= card


def test_status_chart_without_launcher_reads_this_processs_gpu_memory():
    """Plain `serve` on a GPU: the status tab's own memory samples are the GPU memory NVML attributes to this
    process (not RSS), at least what torch holds."""
    import os

    from app import hostinfo
    from app.web.history import own_memory

    block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB
    torch.cuda.synchronize()
    used = hostinfo.process_gpu_bytes(os.getpid())
    if used is None:
        pytest.skip(f"NVML lists no per-process memory here (MIG, or a container's PID namespace): "
                    f"{hostinfo.nvml_reason() or 'no match for this PID'}")
    assert used >= block.numel()
    mib, source = own_memory()
    assert source == "nvml-process" and mib >= 256
