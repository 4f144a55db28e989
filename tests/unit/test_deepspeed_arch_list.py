"""DeepSpeed's kernel-injection build and TORCH_CUDA_ARCH_LIST's architecture suffixes.

On the lent H200 (2026-11-27) every kernel-injected wrap failed with "invalid literal for int() with base 10:
'0a'": the image sets TORCH_CUDA_ARCH_LIST with torch's "9.0a"-style entries, which DeepSpeed's JIT builder
cannot sort. These run on the CPU: DeepSpeed's own CUDA builder parses the list without a GPU.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from app.engine.runtime import RuntimePlan
from app.engine.wrapping import deepspeed_arch_list, injection_misfit, prepare_module


@pytest.mark.parametrize(("value", "fixed"), [
    ("9.0a", "9.0"),
    ("8.0;9.0a+PTX", "8.0;9.0+PTX"),
    ("9.0 10.0f", "9.0;10.0"),
    ("9.0;9.0a", "9.0"),
    ("9.0", None),
    ("8.0 9.0+PTX", None),
    ("", None),
    (None, None),
])
def test_suffixes_are_dropped_and_a_readable_list_is_left_alone(value, fixed) -> None:
    assert deepspeed_arch_list(value) == fixed


def _deepspeed_reads(arch_list: str) -> list[str]:
    """The nvcc architecture arguments DeepSpeed's CUDA inference builder makes of a list (its JIT path)."""
    builder = importlib.import_module("deepspeed.ops.op_builder.transformer_inference").InferenceBuilder()
    builder.jit_mode = True
    builder._jit_arch_list = arch_list  # what jit_load sets from TORCH_CUDA_ARCH_LIST
    return builder.compute_capability_args()


@pytest.mark.parametrize("value", ["9.0a", "8.0;9.0a+PTX", "9.0 10.0f"])
def test_deepspeed_refuses_the_suffix_and_reads_the_fixed_list(value) -> None:
    with pytest.raises(ValueError, match="invalid literal for int"):
        _deepspeed_reads(value)
    _deepspeed_reads(deepspeed_arch_list(value))


def test_the_fixed_list_is_in_place_while_deepspeed_wraps_and_restored_after(monkeypatch) -> None:
    import deepspeed

    seen = []

    def init_inference(module, config):  # noqa: ANN001, ANN202 - records what DeepSpeed's build would read
        seen.append((os.environ.get("TORCH_CUDA_ARCH_LIST"), config["replace_with_kernel_inject"]))
        return module

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")
    monkeypatch.setattr(deepspeed, "init_inference", init_inference)
    plan = RuntimePlan(device="cpu", dtype="fp32", engine="deepspeed", kernel_inject=True, cuda_graph=False)
    prepare_module(torch.nn.Linear(2, 2), plan)
    prepare_module(torch.nn.Linear(2, 2), plan, kernel_inject_supported=False)
    assert seen == [("9.0", True), ("9.0a", False)]
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "9.0a"


def test_a_model_whose_feed_forward_is_not_four_times_hidden_is_not_injected_and_says_why():
    # DeepSpeed's BERT policy sizes the feed-forward at 4 × hidden: the tiny models (2 ×) failed its weight copy
    from transformers import BertConfig

    assert injection_misfit(BertConfig(hidden_size=1024, intermediate_size=4096)) is None  # GTE, StructBERT large
    why = injection_misfit(BertConfig(hidden_size=32, intermediate_size=64))
    assert why == "its feed-forward is 64 wide, 2 × hidden 32; DeepSpeed's BERT kernels assume 4 ×"
    assert injection_misfit(None) is None  # no config: DeepSpeed's own checks decide


def test_preparing_a_misfit_model_wraps_it_without_injection_and_logs_why(monkeypatch, caplog):
    import deepspeed
    from transformers import BertConfig, BertModel

    seen = []
    monkeypatch.setattr(deepspeed, "init_inference", lambda module, config: seen.append(config) or module)
    plan = RuntimePlan(device="cpu", dtype="fp32", engine="deepspeed", kernel_inject=True, cuda_graph=False)
    tiny = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                vocab_size=64))
    with caplog.at_level("WARNING", logger="app.engine.wrapping"):
        prepare_module(tiny, plan)
    assert [c["replace_with_kernel_inject"] for c in seen] == [False]
    assert "kernel_inject=off for BertModel: its feed-forward is 64 wide" in caplog.text
