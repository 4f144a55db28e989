"""StructBERT cross-encoder (iic/nlp_structbert_sentence-similarity_chinese-large): a sentence-pair
classifier, `[CLS] a [SEP] b [SEP]` with token types 0/1, scored as the softmax probability of the
positive label. It is not a sentence embedder: its hidden states are never pooled into vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.runtime import RuntimePlan
from app.errors import ModelUnavailableError
from app.models.bert import bert_config
from app.models.checkpoint import load_state_dict, load_tokenizer, read_json
from app.models.encoding import Encoded, encode_pairs, model_max_length, pad_rows
from app.models.family import describe, load_module, own_queue, padded_width, queue_for_call

log = logging.getLogger(__name__)

POSITIVE_LABEL_NAMES = ("1", "similar", "entailment", "positive", "相似")


@dataclass
class PairScores:
    scores: list[float]
    truncated: list[bool]


def positive_label(config: dict[str, Any], where: str) -> int:
    """Index of the "similar" label, by its name in id2label (`"1"` in the real model)."""
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if not id2label:
        num = int(config.get("num_labels", 2))
        id2label = {i: str(i) for i in range(num)}
    for name in POSITIVE_LABEL_NAMES:
        for idx, label in id2label.items():
            if label.lower() == name:
                return idx
    raise ModelUnavailableError(
        f"{where}/config.json: cannot tell which label means 'similar' in id2label={id2label}; "
        f"expected one named {', '.join(POSITIVE_LABEL_NAMES)}"
    )


class CrossEncoderAdapter:
    family = "cross_encoder"
    batch_size_cap = None

    def __init__(self, model_dir: Path, plan: RuntimePlan, max_length_cap: int = 0, name: str | None = None):
        from transformers import BertForSequenceClassification

        self.model_dir = model_dir
        self.plan = plan
        config = read_json(model_dir, "config.json")
        id2label = config.get("id2label") or {}
        num_labels = len(id2label) if id2label else int(config.get("num_labels", 2))
        self.positive = positive_label(config, str(model_dir))
        self.labels = {int(k): str(v) for k, v in id2label.items()}
        self.tokenizer = load_tokenizer(model_dir)
        self.max_length = model_max_length(model_dir, config, max_length_cap)
        cfg = bert_config({k: v for k, v in config.items() if k not in ("id2label", "label2id")},
                          num_labels=num_labels)
        _, self.model = load_module(model_dir, plan, lambda: BertForSequenceClassification(cfg),
                                    load_state_dict(model_dir))
        self.info = describe(self, model_dir, name, plan, self.max_length, None)
        self.queue = own_queue(self, plan)

    # ---- the family interface (app/models/family.py) --------------------------------------------------------
    def padded(self, longest: int) -> int:
        return padded_width(self, self.plan, longest)

    def encode(self, first: Sequence[str], second: Sequence[str]) -> Encoded:
        return encode_pairs(self.tokenizer, first, second, self.max_length)

    def forward_batch(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """P(similar) of each pair."""
        import torch

        inputs = pad_rows(rows, self.tokenizer.pad_token_id, self.plan.device, self.padded)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
            probs = torch.softmax(logits, dim=-1)[:, self.positive]
        return [float(p) for p in probs.cpu().tolist()]

    # ---- public ---------------------------------------------------------------------------------------------
    def score(self, first: Sequence[str], second: Sequence[str], *, max_batch_tokens: int | None = None,
              max_batch_size: int | None = None) -> PairScores:
        """P(similar) per pair through the role's queue; `max_batch_*` given: this call's own forwards."""
        enc = self.encode(first, second)
        queue = queue_for_call(self, self.plan, max_batch_tokens, max_batch_size)
        return PairScores(queue.run(enc.rows, enc.lengths, model=self), enc.truncated)
