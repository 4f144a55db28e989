"""Floating-point operations of one encoder forward, from the architecture config and the token counts.

Counted: every matrix multiply (2 FLOPs per multiply-add). Not counted: embeddings lookups, LayerNorm,
softmax, GELU, bias adds — a few percent at these sizes, so the fraction of the matmul rate is a slight
underestimate. "Useful" FLOPs use each text's real length; "executed" FLOPs use the padded batch shape
(what the hardware really computed), so their ratio shows what padding costs.

BERT layer, sequence of L tokens, hidden H, intermediate I:
    Q, K, V and output projections 4 · 2·L·H²  +  feed-forward 2 · 2·L·H·I  +  scores QKᵀ and AV 2 · 2·L²·H
DeBERTa-v2 adds the disentangled terms (content→position and position→content against 2·S relative
positions, S = position_buckets or max_relative_positions): 2 · 2·L·(2S)·H, plus projecting the 2S
relative embeddings through the key and query projections: 2 · 2·(2S)·H². RexUniNLU's span head adds
2 · 2·L·H² (query and key projections) + 2·L²·H (the L×L logits).
Pure Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _dims(config: Mapping[str, Any]) -> tuple[int, int, int]:
    h = int(config["hidden_size"])
    return h, int(config.get("intermediate_size", 4 * h)), int(config["num_hidden_layers"])


def layer_flops(config: Mapping[str, Any], length: int) -> int:
    """FLOPs of one encoder layer over one sequence of `length` tokens."""
    h, i, _ = _dims(config)
    n = int(length)
    flops = 8 * n * h * h + 4 * n * h * i + 4 * n * n * h
    if str(config.get("model_type", "")).startswith("deberta") and config.get("relative_attention"):
        span = int(config.get("position_buckets", 0) or 0)
        if span <= 0:
            mrp = int(config.get("max_relative_positions", -1))
            span = mrp if mrp > 0 else int(config.get("max_position_embeddings", 512))
        terms = [t for t in (config.get("pos_att_type") or []) if t in ("c2p", "p2c")]
        flops += len(terms) * 2 * n * (2 * span) * h
        flops += len(terms) * 2 * (2 * span) * h * h
    return flops


def forward_flops(config: Mapping[str, Any], length: int, *, pooler: bool = False, num_labels: int = 0,
                  span_head: bool = False) -> int:
    """FLOPs of a whole forward over one sequence (all layers; optional pooler, classifier, and
    RexUniNLU's span head: two H×H projections and the L×L query·key logits)."""
    h, _, layers = _dims(config)
    flops = layers * layer_flops(config, length)
    if span_head:
        flops += 2 * 2 * length * h * h + 2 * length * length * h
    if pooler:
        flops += 2 * h * h
    if num_labels:
        flops += 2 * h * num_labels
    return flops


def useful_flops(config: Mapping[str, Any], lengths: Iterable[int], **kw: Any) -> int:
    """FLOPs the real tokens need: each sequence at its own length."""
    return sum(forward_flops(config, n, **kw) for n in lengths)


def executed_flops(config: Mapping[str, Any], shapes: Sequence[tuple[int, int]], **kw: Any) -> int:
    """FLOPs the padded batches cost: `shapes` is (rows, padded width) per forward."""
    return sum(rows * forward_flops(config, width, **kw) for rows, width in shapes)
