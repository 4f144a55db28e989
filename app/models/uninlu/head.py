"""The RexUniNLU network: DeBERTa-v2 backbone + rotary span head (spec §3), in the checkpoint's key layout.

    q = rope(ffnq(h)),  k = rope(ffnk(h)),  logits = q · kᵀ   (L × L, no scaling)

RoPE runs over the full hidden size with the prompt's position ids, `freqs = 1 / 10000^(arange(0, H, 2) / H)`
(or the checkpoint's `rotary_emb.freqs`), angles repeated interleaved `[a0, a0, a1, a1, …]` and pairs
rotated `(x₂ᵢ, x₂ᵢ₊₁) → (−x₂ᵢ₊₁, x₂ᵢ)` (GPT-J style, not half-split). Angles and logits are computed in
float32 whatever the serving dtype: the >0 threshold and far positions are sensitive to rounding.

State-dict keys: `plm.*` (DebertaV2Model), `ffnq.{weight,bias}`, `ffnk.{weight,bias}`, `rotary_emb.freqs`.
"""

from __future__ import annotations

import torch
from torch import nn

from app.models.uninlu.backbone import encode

ROPE_THETA = 10000.0


def rope_frequencies(hidden: int, theta: float = ROPE_THETA) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, hidden, 2)[: hidden // 2].float() / hidden))


def apply_rope(x: torch.Tensor, position_ids: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Interleaved rotary embedding of x (B, L, H) at positions (B, L); returns float32."""
    angles = position_ids.to(torch.float32)[..., None] * freqs.to(device=x.device, dtype=torch.float32)
    angles = angles.repeat_interleave(2, dim=-1)  # [a0, a0, a1, a1, …]
    x = x.to(torch.float32)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * angles.cos() + rotated * angles.sin()


class RotaryFrequencies(nn.Module):
    """Holds `freqs` as a buffer so the checkpoint key `rotary_emb.freqs` loads into it."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.register_buffer("freqs", rope_frequencies(hidden))


class RexUniNluModel(nn.Module):
    """forward(input_ids (B, L), position_ids (B, L), attention_mask (B, L, L) bool) → logits (B, L, L) float32."""

    def __init__(self, config) -> None:  # noqa: ANN001 - a DebertaV2Config
        from transformers.models.deberta_v2 import DebertaV2Model

        super().__init__()
        self.plm = DebertaV2Model(config)
        hidden = config.hidden_size
        self.ffnq = nn.Linear(hidden, hidden)
        self.ffnk = nn.Linear(hidden, hidden)
        self.rotary_emb = RotaryFrequencies(hidden)

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = encode(self.plm, input_ids, position_ids, attention_mask)
        freqs = self.rotary_emb.freqs
        q = apply_rope(self.ffnq(hidden), position_ids, freqs)
        k = apply_rope(self.ffnk(hidden), position_ids, freqs)
        return torch.matmul(q, k.transpose(-1, -2))
