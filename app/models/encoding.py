"""Tokenization with explicit truncation flags, and padding of one planned batch.

Texts are tokenized once without truncation, so the length of every text is known: it drives batch
planning, and a text longer than the model's maximum is cut here and flagged — never silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.models.checkpoint import read_json


@dataclass
class Encoded:
    ids: list[list[int]] = field(default_factory=list)
    type_ids: list[list[int]] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    @property
    def rows(self) -> list[tuple[list[int], list[int]]]:
        """One work item per text: (token ids, token type ids)."""
        return list(zip(self.ids, self.type_ids, strict=True))


@dataclass(frozen=True)
class ModelInfo:
    """What the status page and the CLI say about a loaded model."""

    family: str
    name: str
    path: str
    max_length: int
    dimension: int | None
    device: str
    dtype: str
    engine: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def model_max_length(model_dir, config: dict[str, Any], cap: int = 0) -> int:  # noqa: ANN001
    """The model's own maximum: configuration.json's preprocessor max_length/sequence_length when given,
    bounded by config.json's position table; `cap` (> 0) lowers it further."""
    configuration = read_json(model_dir, "configuration.json", required=False)
    pre = configuration.get("preprocessor", {}) if isinstance(configuration, dict) else {}
    declared = pre.get("max_length") or pre.get("sequence_length") or configuration.get("max_length")
    positions = int(config.get("max_position_embeddings", 512))
    limit = min(int(declared), positions) if declared else positions
    return min(limit, cap) if cap > 0 else limit


def encode_texts(tok, texts: Sequence[str], max_len: int) -> Encoded:  # noqa: ANN001
    enc = Encoded()
    raw = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    for ids in raw:
        cut = len(ids) > max_len
        if cut:
            ids = ids[: max_len - 1] + [tok.sep_token_id]
        enc.ids.append(ids)
        enc.type_ids.append([0] * len(ids))
        enc.truncated.append(cut)
    return enc


def encode_pairs(tok, first: Sequence[str], second: Sequence[str], max_len: int) -> Encoded:  # noqa: ANN001
    """`[CLS] a [SEP] b [SEP]` with token types 0/1; an over-long pair is cut longest-first."""
    enc = Encoded()
    full = tok(list(first), list(second), add_special_tokens=True, truncation=False)
    too_long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_len]
    cut = {}
    if too_long:
        redo = tok([first[i] for i in too_long], [second[i] for i in too_long], add_special_tokens=True,
                   truncation="longest_first", max_length=max_len)
        cut = {i: (redo["input_ids"][j], redo["token_type_ids"][j]) for j, i in enumerate(too_long)}
    for i, (ids, types) in enumerate(zip(full["input_ids"], full["token_type_ids"], strict=True)):
        if i in cut:
            ids, types = cut[i]
        enc.ids.append(list(ids))
        enc.type_ids.append(list(types))
        enc.truncated.append(i in cut)
    return enc


def pad_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, device: str,
             padded: Callable[[int], int] | None = None) -> dict[str, Any]:
    """Tensors for one forward over (token ids, token type ids) rows, padded to `padded(longest row)` (None: to
    the longest row; the adapters pass the padded-length ladder, app/models/family.py `padded_width`).

    Filled as NumPy arrays and handed to torch once: a torch.tensor per row cost 22 ms per 128-row batch of mixed
    lengths (3 ms this way, on the development machine), time the GPU waits for between forwards."""
    import numpy as np
    import torch

    longest = max(len(ids) for ids, _ in rows)
    width = longest if padded is None else padded(longest)
    if width < longest:
        raise ValueError(f"pad_rows: width {width} is shorter than the longest row ({longest})")
    ids_a = np.full((len(rows), width), pad_id, dtype=np.int64)
    types_a = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for row, (ids, types) in enumerate(rows):
        n = len(ids)
        ids_a[row, :n] = ids
        types_a[row, :n] = types
        mask[row, :n] = 1
    return {
        "input_ids": torch.from_numpy(ids_a).to(device),
        "token_type_ids": torch.from_numpy(types_a).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }
