"""The two tunable families as torch modules with real (writable, trainable) parameters, and their losses.

The modules are the ones serving builds (app/models/embedding.py, cross_encoder.py): the same BertModel /
BertForSequenceClassification, the same pooling, the same tokenizer and length limit, loaded from the same
checkpoint files, so what is trained is exactly what will be served. Losses:

- embedder, `cosent` (the default for score labels): CoSENT on cosine, the Chinese STS community's usual loss
  (Su Jianlin, 2022): log(1 + Σ exp(λ(cos_j − cos_i))) over every pair of pairs in a batch whose labels say i
  should score above j. It uses 0/1 labels and scores alike, and trains exactly what is evaluated: the order of cosines.
- embedder, `in-batch` (the default for 0/1 labels): in-batch negatives (multiple-negatives ranking): each
  positive pair's text_a must pick its own text_b among every text_b in the batch; labelled negatives serve as
  extra candidates. It measured better on 0/1 pairs (tests/tune: held-out Spearman 0.86 after 100 steps where
  CoSENT had 0.45; README "Tuning to your data" has the figures), so `auto` picks it for them.
- cross-encoder: cross-entropy on the label named "1" (app/models/cross_encoder.py finds it), with a score label
  y as the soft target (y, 1 − y).

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import InputError
from app.models.bert import bert_config
from app.models.checkpoint import load_into, load_state_dict, load_tokenizer, parameters_on_meta, read_json
from app.models.cross_encoder import positive_label
from app.models.embedding import pool, pooler_type
from app.models.encoding import encode_pairs, encode_texts, model_max_length, pad_rows

ROLES = ("embed", "cross")
EMBED_LOSSES = ("auto", "cosent", "in-batch")
COSENT_SCALE = 20.0  # λ: CoSENT's published value; cosines differ by little, the scale makes the softmax sharp
IN_BATCH_SCALE = 20.0  # the same temperature as sentence-transformers' MultipleNegativesRankingLoss


@dataclass
class Trainable:
    role: str
    module: Any  # torch.nn.Module: forward(input_ids, token_type_ids, attention_mask) → vectors or logits
    tokenizer: Any
    max_length: int
    prefix: str  # the checkpoint's key prefix for the module's own keys ("bert." for GTE's usual layout)
    positive: int = 1  # cross-encoder: index of the label named "1"

    def inputs(self, first: Sequence[str], second: Sequence[str], device: str) -> dict[str, Any]:
        """Padded tensors for one micro-batch: embedder, the texts a and b in one forward; cross, the pairs."""
        pad = self.tokenizer.pad_token_id
        if self.role == "embed":
            enc = encode_texts(self.tokenizer, [*first, *second], self.max_length)
        else:
            enc = encode_pairs(self.tokenizer, first, second, self.max_length)
        return pad_rows(enc.rows, pad, device)


def embedder_module(bert: Any, pooler: str) -> Any:
    import torch

    class PooledBert(torch.nn.Module):
        """BertModel + the checkpoint's pooling: the sentence vector serving computes (not normalised)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.pooler = pooler

        def forward(self, input_ids, token_type_ids, attention_mask):  # noqa: ANN001, ANN201
            need_states = self.pooler in ("avg_top2", "avg_first_last")
            out = self.bert(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                            output_hidden_states=need_states)
            return pool(self.pooler, out.last_hidden_state, out.hidden_states, attention_mask)

    return PooledBert()


def load_trainable(role: str, model_dir: Path, max_length_cap: int = 0) -> Trainable:
    """The role's module in fp32 on the CPU, with its own copy of the checkpoint's weights (DeepSpeed moves it)."""
    import torch
    from transformers import BertForSequenceClassification, BertModel

    config = read_json(model_dir, "config.json")
    tokenizer = load_tokenizer(model_dir)
    max_length = model_max_length(model_dir, config, max_length_cap)
    state = load_state_dict(model_dir)
    if role == "embed":
        prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
        with parameters_on_meta():
            bert = BertModel(bert_config(config), add_pooling_layer=False)
        load_into(bert, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, str(model_dir),
                  ignore=("pooler.",))
        module, positive = embedder_module(bert, pooler_type(model_dir)), 1
    else:
        id2label = config.get("id2label") or {}
        num_labels = len(id2label) if id2label else int(config.get("num_labels", 2))
        positive = positive_label(config, str(model_dir))
        cfg = bert_config({k: v for k, v in config.items() if k not in ("id2label", "label2id")},
                          num_labels=num_labels)
        with parameters_on_meta():
            module = BertForSequenceClassification(cfg)
        load_into(module, state, str(model_dir))
        prefix = ""
    # The loaded tensors may be pages of the memory-mapped checkpoint: training gets its own fp32 copy.
    with torch.no_grad():
        for p in module.parameters():
            p.data = p.data.detach().to(torch.float32).clone()
            p.requires_grad_(True)
    module.train()
    return Trainable(role, module, tokenizer, max_length, prefix, positive)


def trained_state(t: Trainable) -> dict[str, Any]:
    """The trained weights under the checkpoint's own key names, on the CPU (dtype as trained)."""
    inner = t.module.bert if t.role == "embed" else t.module
    return {t.prefix + k: v.detach().cpu() for k, v in inner.state_dict().items() if not k.endswith("position_ids")}


def cosent_loss(cosines: Any, labels: Any, scale: float = COSENT_SCALE) -> Any:
    import torch

    diff = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = λ(cos_j − cos_i)
    should_rank_above = labels[:, None] > labels[None, :]  # i's label above j's: cos_i should be above cos_j
    terms = diff[should_rank_above]
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)  # log(1 + Σ exp(…))


def in_batch_loss(a: Any, b: Any, labels: Any, scale: float = IN_BATCH_SCALE) -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812

    positive = labels >= 0.5
    if not bool(positive.any()):
        return (a.sum() + b.sum()) * 0.0  # nothing to rank in this batch; a zero that still has a graph
    scores = scale * F.normalize(a[positive], dim=-1) @ F.normalize(b, dim=-1).T
    targets = torch.nonzero(positive).squeeze(1)  # each positive a's own b, among every b of the batch
    return F.cross_entropy(scores, targets)


def cross_entropy_loss(logits: Any, labels: Any, positive: int) -> Any:
    import torch

    logits = logits.float()
    log_all = torch.logsumexp(logits, dim=-1)
    log_p = logits[:, positive] - log_all
    others = torch.cat([logits[:, :positive], logits[:, positive + 1:]], dim=-1)
    log_not = torch.logsumexp(others, dim=-1) - log_all
    return -(labels * log_p + (1.0 - labels) * log_not).mean()


def batch_loss(t: Trainable, engine: Any, first: Sequence[str], second: Sequence[str], labels: Sequence[float],
               device: str, loss: str) -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812

    inputs = t.inputs(first, second, device)
    y = torch.tensor(labels, dtype=torch.float32, device=device)
    out = engine(**inputs)
    if t.role == "cross":
        return cross_entropy_loss(out.logits, y, t.positive)
    vectors = out.float()
    a, b = vectors[: len(first)], vectors[len(first):]
    if loss == "in-batch":
        return in_batch_loss(a, b, y)
    return cosent_loss(F.cosine_similarity(a, b, dim=-1), y)


def resolve_loss(role: str, loss: str, binary: bool) -> str:
    """The loss a run trains with: cross-entropy for the cross-encoder; for the embedder `auto` is in-batch
    negatives for 0/1 labels and CoSENT for scores."""
    check_loss(role, loss, binary)
    if role == "cross":
        return "cross-entropy"
    if loss == "auto":
        return "in-batch" if binary else "cosent"
    return loss


def check_loss(role: str, loss: str, binary: bool) -> None:
    if loss not in EMBED_LOSSES:
        raise InputError(f"--loss {loss}: choose {' or '.join(EMBED_LOSSES)}")
    if loss != "auto" and role != "embed":
        raise InputError("--loss in-batch is the embedder's; the cross-encoder trains with cross-entropy: leave out "
                         "--loss")
    if loss == "in-batch" and not binary:
        raise InputError("--loss in-batch needs 0/1 labels (it learns from the positive pairs); the training file "
                         "has scores: use --loss cosent")
