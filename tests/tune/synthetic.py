"""A task the untuned tiny models cannot do: pairs labelled by a rule they have to learn.

Characters fall into GROUPS disjoint groups, each split in two halves; text_a is drawn from one group's first half,
text_b from a (possibly other) group's second half, and the label is 1 when the groups are the same. The two texts
of a pair never share a character, so a random model (which only knows characters, not the groups) scores
same-group pairs no higher than others: its held-out figures sit at chance. Balanced: half the pairs are 1.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from app.models.fixture_parts import HANZI

GROUPS = 4
PER_HALF = 8
TEXT_CHARS = (4, 8)


def _alphabet() -> list[str]:
    seen: dict[str, None] = {}
    for ch in HANZI:
        seen.setdefault(ch, None)
    return list(seen)[: GROUPS * 2 * PER_HALF]


def halves(groups: int = GROUPS) -> list[tuple[list[str], list[str]]]:
    chars = _alphabet()
    out = []
    for g in range(groups):
        block = chars[g * 2 * PER_HALF:(g + 1) * 2 * PER_HALF]
        out.append((block[:PER_HALF], block[PER_HALF:]))
    return out


def pairs(n: int, seed: int, n_groups: int = GROUPS) -> list[dict]:
    rng = random.Random(seed)
    groups = halves(n_groups)
    rows = []
    for i in range(n):
        g = rng.randrange(n_groups)
        same = i % 2 == 0
        h = g if same else rng.choice([x for x in range(n_groups) if x != g])
        a = "".join(rng.choice(groups[g][0]) for _ in range(rng.randint(*TEXT_CHARS)))
        b = "".join(rng.choice(groups[h][1]) for _ in range(rng.randint(*TEXT_CHARS)))
        rows.append({"text_a": a, "text_b": b, "label": 1 if same else 0})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def task_files(folder: Path, train: int = 512, held_out: int = 256, groups: int = GROUPS) -> tuple[Path, Path]:
    """Training and held-out files (different seeds: new pairs of the same rule)."""
    folder.mkdir(parents=True, exist_ok=True)
    return (write_jsonl(folder / "train.jsonl", pairs(train, 1, groups)),
            write_jsonl(folder / "eval.jsonl", pairs(held_out, 2, groups)))
