"""GTE sentence embeddings (iic/nlp_gte_sentence-embedding_chinese-large): BERT backbone, pooling as named
in configuration.json (`emb_pooler_type`, default `cls` = last-layer CLS vector without the pooler),
L2-normalised by default, float32 output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.runtime import RuntimePlan
from app.engine.scheduler import run_batched
from app.engine.wrapping import prepare_module
from app.errors import ModelUnavailableError
from app.models.bert import bert_config
from app.models.checkpoint import (
    load_into,
    load_state_dict,
    load_tokenizer,
    parameters_on_meta,
    read_json,
    strip_prefix,
)
from app.models.encoding import ModelInfo, encode_texts, model_max_length, pad_batch

log = logging.getLogger(__name__)

POOLERS = ("cls", "avg", "avg_top2", "avg_first_last")


@dataclass
class EmbedResult:
    vectors: np.ndarray  # (n, dimension) float32
    truncated: list[bool]
    token_counts: list[int]


def pooler_type(model_dir: Path) -> str:
    configuration = read_json(model_dir, "configuration.json", required=False)
    model_section = configuration.get("model", {}) if isinstance(configuration, dict) else {}
    name = model_section.get("emb_pooler_type") or configuration.get("emb_pooler_type") or "cls"
    if name not in POOLERS:
        raise ModelUnavailableError(
            f"{model_dir}/configuration.json: emb_pooler_type {name!r} is not supported; known: {', '.join(POOLERS)}"
        )
    return name


def pool(name: str, last_hidden, hidden_states, mask):  # noqa: ANN001, ANN201
    """Sentence vector from token states, as ModelScope's sentence-embedding pooler defines it."""
    if name == "cls":
        return last_hidden[:, 0]
    m = mask.unsqueeze(-1).to(last_hidden.dtype)
    if name == "avg":
        states = last_hidden
    elif name == "avg_top2":
        states = (hidden_states[-1] + hidden_states[-2]) / 2.0
    else:  # avg_first_last
        states = (hidden_states[1] + hidden_states[-1]) / 2.0
    return (states * m).sum(1) / m.sum(1)


class EmbeddingAdapter:
    family = "embedding"

    def __init__(self, model_dir: Path, plan: RuntimePlan, max_length_cap: int = 0, name: str | None = None):
        from transformers import BertModel

        self.model_dir = model_dir
        self.plan = plan
        config = read_json(model_dir, "config.json")
        self.tokenizer = load_tokenizer(model_dir)
        self.pooler = pooler_type(model_dir)
        self.max_length = model_max_length(model_dir, config, max_length_cap)
        with parameters_on_meta():
            module = BertModel(bert_config(config), add_pooling_layer=False)
        # Checkpoints keep the backbone under `bert.` (ModelScope's BertForSentenceEmbedding) or bare.
        load_into(module, strip_prefix(load_state_dict(model_dir), "bert."), str(model_dir), ignore=("pooler.",))
        self.dimension = int(config["hidden_size"])
        self.model = prepare_module(module, plan)
        self.info = ModelInfo(self.family, name or str(model_dir), str(model_dir), self.max_length,
                              self.dimension, plan.device, plan.dtype, plan.engine)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return encode_texts(self.tokenizer, texts, self.max_length).lengths

    def embed(self, texts: Sequence[str], *, normalize: bool = True, max_batch_tokens: int = 16384,
              max_batch_size: int = 128) -> EmbedResult:
        import torch

        enc = encode_texts(self.tokenizer, texts, self.max_length)
        need_states = self.pooler in ("avg_top2", "avg_first_last")

        def run(batch: list[int]) -> list[np.ndarray]:
            inputs = pad_batch(enc, batch, self.tokenizer.pad_token_id, self.plan.device)
            with torch.inference_mode():
                out = self.model(**inputs, output_hidden_states=need_states)
                vec = pool(self.pooler, out.last_hidden_state, out.hidden_states, inputs["attention_mask"])
                vec = vec.float()
                if normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
            return list(vec.cpu().numpy())

        rows = run_batched(enc.lengths, run, max_batch_tokens, max_batch_size, self.plan.min_batch_fill)
        vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dimension), np.float32)
        return EmbedResult(vectors, enc.truncated, enc.lengths)
