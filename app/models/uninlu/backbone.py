"""DeBERTa-v2 with a per-sample 2-D attention mask and custom position ids (spec §2), on transformers 5.

The stock `DebertaV2Model.forward` cannot run RexUniNLU: it multiplies the embeddings by the mask (fails on
a 3-D mask), builds relative positions from 0…L-1 instead of the prompt's position ids, and its relative
gather works for one sample only. So the stock modules hold the weights and do the per-token work
(embeddings, projections, output blocks, the conv), and `encode` does the attention itself:

    score = (Q·K + Q·PK[c] + K·PQ[c]) / sqrt(3·d_head),  c = clamp(pos[q] − pos[k] + S, 0, 2S−1)

with PK/PQ the key/query projections of the layer-normed relative embeddings, S the relative span
(`position_buckets`), and masked cells at the dtype's minimum before the softmax. Positions are not
log-bucketed unless the config asks for it with `max_relative_positions > 0` (the reference's rule).

Batching: padding rows are zeroed in the embeddings (the conv after layer 0 sees its neighbours), masked
out of attention, and zeroed again by the conv's row mask — a padded sample gives the same result as alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

_NOT_CONFIG_KEYS = ("model_type", "architectures", "transformers_version", "auto_map", "_name_or_path")


def deberta_config(config: dict[str, Any], vocab_rows: int):  # noqa: ANN201
    """A DebertaV2Config from config.json, with the embedding rows the checkpoint really has (V + 4)."""
    from transformers.models.deberta_v2 import DebertaV2Config

    values = {k: v for k, v in config.items() if k not in _NOT_CONFIG_KEYS}
    values["vocab_size"] = vocab_rows
    return DebertaV2Config(**values)


def relative_positions(position_ids: torch.Tensor, config) -> torch.Tensor:  # noqa: ANN001
    """rel[b, q, k] = pos[b, q] − pos[b, k], log-bucketed only when both bucket settings are positive."""
    rel = position_ids[:, :, None] - position_ids[:, None, :]
    buckets = getattr(config, "position_buckets", -1)
    max_rel = getattr(config, "max_relative_positions", -1)
    if buckets > 0 and max_rel > 0:
        from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

        rel = make_log_bucket_position(rel, buckets, max_rel)
    return rel.to(torch.long)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(…, L, H) → (…, heads, L, d)."""
    *lead, length, hidden = x.shape
    return x.view(*lead, length, heads, hidden // heads).transpose(-3, -2)


def relative_index(rel: torch.Tensor, span: int) -> torch.Tensor:
    """Row of the relative-embedding table for every (q, k): clamp(rel + S, 0, 2S − 1), shape (B, 1, L, L)."""
    return torch.clamp(rel + span, 0, span * 2 - 1)[:, None]


def disentangled_attention(att: nn.Module, hidden: torch.Tensor, blocked: torch.Tensor, c: torch.Tensor | None,
                           rel_embeddings: torch.Tensor | None) -> torch.Tensor:
    """One DisentangledSelfAttention (its weights) over a batch: hidden (B, L, H), blocked (B, 1, L, L) True
    where attention is not allowed, c (B, 1, L, L) from `relative_index`, rel_embeddings (2S, H) already
    layer-normed. Returns (B, L, H)."""
    heads = att.num_attention_heads
    q = _heads(att.query_proj(hidden), heads)  # (B, h, L, d)
    k = _heads(att.key_proj(hidden), heads)
    v = _heads(att.value_proj(hidden), heads)
    d = q.size(-1)
    kinds = att.pos_att_type
    factor = 1 + int("c2p" in kinds) + int("p2c" in kinds)
    scale = math.sqrt(d * factor)
    scores = torch.matmul(q, k.transpose(-1, -2) / scale)
    if att.relative_attention:
        span = att.pos_ebd_size
        table = rel_embeddings[: span * 2]
        if "c2p" in kinds:
            pos_key = _heads(att.key_proj(table) if att.share_att_key else att.pos_key_proj(table), heads)
            c2p = torch.matmul(q, pos_key.transpose(-1, -2))  # (B, h, L, 2S)
            c2p = torch.gather(c2p, -1, c.expand(-1, heads, -1, -1))
            scores = scores + c2p / scale
        if "p2c" in kinds:
            pos_query = _heads(att.query_proj(table) if att.share_att_key else att.pos_query_proj(table), heads)
            p2c = torch.matmul(k, pos_query.transpose(-1, -2))  # (B, h, L_k, 2S)
            # out[q, k] = K_k · PQ[c[q, k]]: gather along the key's row with the transposed index.
            p2c = torch.gather(p2c, -1, c.transpose(-1, -2).expand(-1, heads, -1, -1)).transpose(-1, -2)
            scores = scores + p2c / scale
    scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    context = torch.matmul(probs, v)  # (B, h, L, d)
    return context.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)


def encode(plm: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states (B, L, H) of a DebertaV2Model `plm` for a 2-D mask (B, L, L) (True = may attend)."""
    mask = mask.bool()
    # A token that nobody may attend to is padding (the reference's `mask2d.sum(-2) > 0`).
    rows = mask.any(dim=-2).to(torch.long)
    embeddings = plm.embeddings(input_ids=input_ids, mask=rows)
    encoder = plm.encoder
    rel_embeddings = encoder.get_rel_embedding()
    c = None
    if getattr(plm.config, "relative_attention", False):
        span = encoder.layer[0].attention.self.pos_ebd_size
        c = relative_index(relative_positions(position_ids, plm.config), span)
    blocked = ~mask[:, None]
    hidden = embeddings
    for i, layer in enumerate(encoder.layer):
        context = disentangled_attention(layer.attention.self, hidden, blocked, c, rel_embeddings)
        attended = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
        if i == 0 and encoder.conv is not None:
            hidden = encoder.conv(embeddings, hidden, rows)
    return hidden
