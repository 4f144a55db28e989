"""Deterministic Chinese workloads with a stated length distribution, generated from a seed.

The distribution is a mixture of three bands (weights and character ranges in `BANDS`): short search
queries, single sentences and paragraphs up to the model maximum. Lengths are uniform within a band.
Texts use only Chinese characters and Chinese punctuation, each of which is one token for the BERT
Chinese tokenizer, so a text of k characters is k + 2 tokens with [CLS] and [SEP]; the report still
counts tokens with the model's own tokenizer and prints min/p50/p95/max.

Pure Python: no torch, no tokenizer. The same seed gives the same texts on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from app.models.fixture_parts import HANZI  # pure data; covered by the tiny test vocabulary
from app.models.uninlu.presets import presets


@dataclass(frozen=True)
class Band:
    name: str
    weight: float
    min_chars: int
    max_chars: int


# A semantic-search / dedup service: many short queries, many single sentences, fewer long paragraphs.
BANDS: tuple[Band, ...] = (
    Band("query", 0.40, 4, 24),
    Band("sentence", 0.40, 16, 96),
    Band("paragraph", 0.20, 128, 510),
)
# Cross-encoder pairs: a query against a candidate passage (retrieve-then-rerank).
PAIR_SECOND_BANDS: tuple[Band, ...] = (
    Band("sentence", 0.70, 16, 96),
    Band("paragraph", 0.30, 128, 510),
)

_CLAUSE_END = "，"
_SENTENCE_END = "。！？"


def _alphabet() -> str:
    seen: dict[str, None] = {}
    for ch in HANZI:
        seen.setdefault(ch, None)
    return "".join(seen)


def describe(bands: Sequence[Band] = BANDS) -> str:
    parts = [f"{b.weight:.0%} {b.name} {b.min_chars}–{b.max_chars} chars" for b in bands]
    return ", ".join(parts) + " (uniform within a band; 1 Chinese character = 1 token, + [CLS]/[SEP])"


def make_text(rng: random.Random, n_chars: int, alphabet: str) -> str:
    """A text of exactly `n_chars` characters: clauses of 4–14 characters separated by commas, sentences
    ending in 。！？ — the shape of real Chinese prose, which matters only for tokenization."""
    out: list[str] = []
    clause = 0
    clause_len = rng.randint(4, 14)
    while len(out) < n_chars - 1:
        if clause >= clause_len:
            out.append(_CLAUSE_END if rng.random() < 0.7 else rng.choice(_SENTENCE_END))
            clause, clause_len = 0, rng.randint(4, 14)
            continue
        out.append(rng.choice(alphabet))
        clause += 1
    if n_chars >= 1:
        out.append(rng.choice(_SENTENCE_END) if n_chars > 6 else rng.choice(alphabet))
    return "".join(out[:n_chars])


def _pick_band(rng: random.Random, bands: Sequence[Band]) -> Band:
    x = rng.random() * sum(b.weight for b in bands)
    for b in bands:
        x -= b.weight
        if x < 0:
            return b
    return bands[-1]


def make_texts(n: int, seed: int, bands: Sequence[Band] = BANDS) -> tuple[list[str], list[str]]:
    """`n` texts drawn from the mixture, and the band name of each."""
    rng = random.Random(seed)
    alphabet = _alphabet()
    texts, names = [], []
    for _ in range(n):
        band = _pick_band(rng, bands)
        texts.append(make_text(rng, rng.randint(band.min_chars, band.max_chars), alphabet))
        names.append(band.name)
    return texts, names


def fixed_bands(tokens: int) -> tuple[Band, ...]:
    """Every text exactly `tokens` tokens ([CLS] + characters + [SEP]): the shape of a throughput figure
    quoted "at N-token inputs"."""
    if tokens < 3:
        raise ValueError("a fixed length must be at least 3 tokens ([CLS], one character, [SEP])")
    return (Band(f"fixed-{tokens}", 1.0, tokens - 2, tokens - 2),)


def make_pairs(n: int, seed: int, fixed_tokens: int = 0) -> tuple[list[str], list[str]]:
    """`n` (query, passage) pairs: queries from the query band, passages from PAIR_SECOND_BANDS; with
    `fixed_tokens`, every pair is that many tokens ([CLS] a [SEP] b [SEP]), split about evenly."""
    rng = random.Random(seed + 1)
    alphabet = _alphabet()
    query = BANDS[0]
    first, second = [], []
    for _ in range(n):
        if fixed_tokens:
            if fixed_tokens < 5:
                raise ValueError("a fixed pair length must be at least 5 tokens")
            chars = fixed_tokens - 3
            first.append(make_text(rng, chars // 2, alphabet))
            second.append(make_text(rng, chars - chars // 2, alphabet))
            continue
        first.append(make_text(rng, rng.randint(query.min_chars, query.max_chars), alphabet))
        band = _pick_band(rng, PAIR_SECOND_BANDS)
        second.append(make_text(rng, rng.randint(band.min_chars, band.max_chars), alphabet))
    return first, second


def spread_subset(lengths: Sequence[int], k: int) -> list[int]:
    """`k` indices spread evenly over the length ranks (a stratified sample), in ascending index order.

    The naive baseline pads every input to the model maximum, so its time per input does not depend on the
    input's length; the spread sample keeps the subset's length mix like the whole set's anyway."""
    n = len(lengths)
    if k >= n:
        return list(range(n))
    by_length = sorted(range(n), key=lambda i: (lengths[i], i))
    picked = {by_length[min(n - 1, int((j + 0.5) * n / k))] for j in range(k)}
    return sorted(picked)


# ---- RexUniNLU: the presets grouped into task families ---------------------------------------------------
NLU_FAMILIES = {
    "ner": "ner",
    "relation": "relation",
    "event": "event",
    "aspect_sentiment": "aspect",
    "aspect_sentiment_implicit": "aspect",
    "aspect_polarity": "aspect",
    "sentiment": "classification",
    "topic": "classification",
    "hierarchical": "classification",
    "coreference": "classification",
    "multi_label": "multi_label",
    "text_matching": "matching_nli",
    "nli": "matching_nli",
    "choice_mrc": "matching_nli",
    "extractive_mrc": "reading_comprehension",
}


def nlu_items(per_family: int) -> list[dict[str, Any]]:
    """`per_family` requests for each task family, cycling through that family's presets (their own
    schema, task and example text)."""
    families: dict[str, list[dict[str, Any]]] = {}
    for p in presets():
        families.setdefault(NLU_FAMILIES.get(p["id"], p["task"]), []).append(p)
    items = []
    for family, group in families.items():
        for i in range(per_family):
            p = group[i % len(group)]
            items.append({"family": family, "preset": p["id"], "text": p["text"], "schema": p["schema"],
                          "task": p["task"]})
    return items


def bands_as_dicts(bands: Sequence[Band] = BANDS) -> list[dict[str, Any]]:
    return [asdict(b) for b in bands]
