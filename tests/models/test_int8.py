"""`--dtype int8` (CPU dynamic quantisation) against the fp32 engine on the same checkpoints.

Quantisation changes the numbers, so the check is closeness, not equality; the bench reports the same
agreement on full-size models (`python -m app bench --dtype int8`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.runtime import resolve_plan
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter

TEXTS = ["北京天安门", "我喜欢这部电影，音乐很好", "上海", "今天天气很好，我们去公园", "abc 123", "电影",
         "今天天气很好，我们去公园，" * 8]


@pytest.fixture(scope="module")
def int8_plan(ds):
    return resolve_plan("cpu", "int8", "torch", ds)


def quantized_linears(module):
    return [m for m in module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]


def test_int8_embeddings_stay_close_to_fp32(tiny_dirs, cpu_plan, int8_plan):
    fp32 = EmbeddingAdapter(tiny_dirs["embed"], cpu_plan)
    int8 = EmbeddingAdapter(tiny_dirs["embed"], int8_plan)
    assert int8.info.dtype == "int8"
    linears = [m for m in fp32.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(quantized_linears(int8.model)) == len(linears) > 0  # every Linear, nothing else
    a, b = fp32.embed(TEXTS).vectors, int8.embed(TEXTS).vectors
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.min() > 0.97, cos
    assert not np.allclose(a, b, atol=1e-6)  # it really ran quantised kernels


def test_int8_similarity_scores_stay_close_to_fp32(tiny_dirs, cpu_plan, int8_plan):
    fp32 = CrossEncoderAdapter(tiny_dirs["cross"], cpu_plan)
    int8 = CrossEncoderAdapter(tiny_dirs["cross"], int8_plan)
    assert quantized_linears(int8.model)
    first, second = TEXTS, TEXTS[::-1]
    a, b = np.array(fp32.score(first, second).scores), np.array(int8.score(first, second).scores)
    assert np.abs(a - b).max() < 0.05


def test_int8_under_the_deepspeed_wrapper_equals_int8_torch(tiny_dirs, int8_plan, ds):
    int8_ds = EmbeddingAdapter(tiny_dirs["embed"], resolve_plan("cpu", "int8", "deepspeed", ds))
    assert type(int8_ds.model).__name__ == "InferenceEngine" and quantized_linears(int8_ds.model)
    a = EmbeddingAdapter(tiny_dirs["embed"], int8_plan).embed(TEXTS).vectors
    assert np.allclose(a, int8_ds.embed(TEXTS).vectors, atol=1e-5)


def _mapped(path) -> bool:
    with open("/proc/self/maps", encoding="utf-8") as f:
        return any(str(path) in line for line in f)


@pytest.mark.parametrize("role", ["embed", "cross"])
def test_int8_lets_go_of_the_memory_mapped_checkpoint(tiny_dirs, int8_plan, cpu_plan, tmp_path, role):
    import shutil

    # A float tensor left pointing into the mapping (a bias inside the packed int8 weights, a LayerNorm, the
    # original Linear kept by a leftover qconfig closure) keeps every float weight read while quantising
    # resident; after loading, nothing may. (The cross-encoder's classifier was the one kept, once.)
    adapter_cls = EmbeddingAdapter if role == "embed" else CrossEncoderAdapter
    for name, plan in (("fp32", cpu_plan), ("int8", int8_plan)):
        d = shutil.copytree(tiny_dirs[role], tmp_path / name)
        weights = d / "pytorch_model.bin"
        assert weights.exists()
        adapter = adapter_cls(d, plan)  # no gc.collect() here: loading must have let go by itself
        assert _mapped(weights) == (name == "fp32")  # fp32 serves from the mapping itself
        assert not any("qconfig" in m.__dict__ for m in adapter.model.modules())
