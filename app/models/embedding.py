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
from app.errors import ModelUnavailableError
from app.models.bert import bert_config
from app.models.checkpoint import load_state_dict, load_tokenizer, read_json, strip_prefix
from app.models.encoding import Encoded, encode_texts, model_max_length, pad_rows
from app.models.family import describe, load_module, own_queue, padded_width, queue_for_call

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
    batch_size_cap = None

    def __init__(self, model_dir: Path, plan: RuntimePlan, max_length_cap: int = 0, name: str | None = None):
        from transformers import BertModel

        self.model_dir = model_dir
        self.plan = plan
        config = read_json(model_dir, "config.json")
        self.tokenizer = load_tokenizer(model_dir)
        self.pooler = pooler_type(model_dir)
        self.max_length = model_max_length(model_dir, config, max_length_cap)
        # Checkpoints keep the backbone under `bert.` (ModelScope's BertForSentenceEmbedding) or bare.
        _, self.model = load_module(model_dir, plan, lambda: BertModel(bert_config(config), add_pooling_layer=False),
                                    strip_prefix(load_state_dict(model_dir), "bert."), ignore=("pooler.",))
        self.dimension = int(config["hidden_size"])
        self.info = describe(self, model_dir, name, plan, self.max_length, self.dimension)
        self.queue = own_queue(self, plan)

    # ---- the family interface (app/models/family.py) --------------------------------------------------------
    def padded(self, longest: int) -> int:
        return padded_width(self, self.plan, longest)

    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode_texts(self.tokenizer, texts, self.max_length)

    def forward_batch(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        """Pooled float32 vectors, not normalised (normalising is each request's own choice)."""
        import torch

        inputs = pad_rows(rows, self.tokenizer.pad_token_id, self.plan.device, self.padded)
        need_states = self.pooler in ("avg_top2", "avg_first_last")
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=need_states)
            vec = pool(self.pooler, out.last_hidden_state, out.hidden_states, inputs["attention_mask"]).float()
        return list(vec.cpu().numpy())

    def postprocess(self, rows: list[np.ndarray], normalize: bool) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dimension), np.float32)
        vectors = np.stack(rows).astype(np.float32)
        if normalize:  # as torch.nn.functional.normalize: x / max(‖x‖, 1e-12)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, np.float32(1e-12))
        return vectors

    # ---- public ---------------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], *, normalize: bool = True, max_batch_tokens: int | None = None,
              max_batch_size: int | None = None) -> EmbedResult:
        """Vectors for `texts` through the role's queue; `max_batch_*` given: this call's own forwards with
        those limits instead."""
        enc = self.encode(texts)
        queue = queue_for_call(self, self.plan, max_batch_tokens, max_batch_size)
        rows = queue.run(enc.rows, enc.lengths, model=self)
        return EmbedResult(self.postprocess(rows, normalize), enc.truncated, enc.lengths)
