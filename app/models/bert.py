"""BERT-family pieces shared by the GTE embedder and the StructBERT cross-encoder."""

from __future__ import annotations

from typing import Any

_NOT_BERT_KEYS = ("model_type", "architectures", "transformers_version", "auto_map")


def bert_config(config: dict[str, Any], **overrides: Any):  # noqa: ANN201
    """A transformers BertConfig from a config.json. StructBERT's `model_type: structbert` is
    BERT-compatible but unknown to transformers, so the type is dropped rather than dispatched on."""
    from transformers import BertConfig

    values = {k: v for k, v in config.items() if k not in _NOT_BERT_KEYS}
    values.update(overrides)
    cfg = BertConfig(**values)
    # SDPA attention: the fused kernel on CUDA, and no slower than eager on the CPU.
    cfg._attn_implementation = "sdpa"
    return cfg
