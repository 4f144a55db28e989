"""The RexUniNLU work budget (pipeline.Budget) on planted logits: a model that "finds" a span in every cell is
stopped by the path budget before its hits are built, a long text by the forward budget before its windows
run, and chunked levels give the same answer whatever order the batches ran in. No torch."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import BudgetExceededError
from app.models.uninlu import pipeline
from app.models.uninlu.decode import TooManySpans, decode_spans
from app.models.uninlu.fixture import rex_vocab, write_rex_tokenizer
from app.models.uninlu.prompt import PromptTokenizer
from app.models.uninlu.schema import parse_schema

TEXT = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("rex-tokenizer")
    write_rex_tokenizer(root, rex_vocab())
    return PromptTokenizer.from_dir(root)


class Everywhere:
    """Every cell on: the worst model, a span for every (start ≤ end, anchor). Counts windows run."""

    def __init__(self, reverse: bool = False, seed: int | None = None):
        self.windows = 0
        self.reverse = reverse
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __call__(self, windows, reduce):
        self.windows += len(windows)
        order = list(range(len(windows)))[::-1] if self.reverse else range(len(windows))
        out = [None] * len(windows)
        for i in order:
            w = windows[i]
            if self.rng is None:
                logits = np.full((len(w), len(w)), 5.0, dtype=np.float32)
            else:  # random logits, fixed per window content: the same answer whatever the order
                rng = np.random.default_rng(abs(hash((w.input_ids, w.index))) % 2**32)
                logits = rng.normal(-3.5, 2, (len(w), len(w))).astype(np.float32)  # ~4 % of cells on
            out[i] = reduce(w, logits)
        return out


def test_nested_schema_on_a_model_that_finds_everything_stops_at_the_path_budget(tok):
    forward = Everywhere()
    budget = pipeline.Budget(max_forwards=10_000, max_paths=500)
    with pytest.raises(BudgetExceededError, match="more than 500 spans.*WENMO_NLU_MAX_PATHS"):
        pipeline.extract(TEXT * 4, parse_schema({"人物": {"职位": None}}), tok, forward, budget=budget)
    # Stopped in the first level: one window holds more spans than the whole budget.
    assert forward.windows == 1


def test_the_same_request_within_a_big_budget_finds_every_path(tok):
    text = TEXT[:8]
    forward = Everywhere()
    result = pipeline.extract(text, parse_schema({"人物": {"职位": None}}), tok, forward,
                              budget=pipeline.Budget(max_forwards=10_000, max_paths=100_000))
    n = len(text)  # one token per character here: n(n+1)/2 spans at each level
    spans = n * (n + 1) // 2
    assert len(result.paths) == spans * spans
    assert result.forwards == forward.windows >= 2  # prefix groups share hints: fewer windows than groups


def test_forward_budget_refuses_a_level_before_running_it(tok):
    text = "北京" * 3000  # many windows per hint
    forward = Everywhere()
    budget = pipeline.Budget(max_forwards=5, max_paths=10**9)
    with pytest.raises(BudgetExceededError, match="more than 5 model passes.*WENMO_NLU_MAX_FORWARDS"):
        pipeline.extract(text, parse_schema({"人物": None}), tok, forward, budget=budget)
    assert forward.windows == 0


def test_classification_spends_the_forward_budget_too(tok):
    schema = parse_schema({f"类{i}": {f"子{i}": None} for i in range(8)})
    with pytest.raises(BudgetExceededError, match="more than 1 model passes"):
        pipeline.classify(TEXT, schema, tok, Everywhere(), multi=True, budget=pipeline.Budget(max_forwards=1))


def test_chunks_and_batch_order_do_not_change_the_answer(tok, monkeypatch):
    text = TEXT * 40  # several windows per hint, overlapping: duplicates to drop
    schema = parse_schema({"人物": {"职位": None}, "地点": None})
    big = pipeline.Budget(max_forwards=10**6, max_paths=10**7)
    reference = pipeline.extract(text, schema, tok, Everywhere(seed=1), budget=big)
    monkeypatch.setattr(pipeline, "CHUNK_WINDOWS", 3)
    chunked = pipeline.extract(text, schema, tok, Everywhere(reverse=True, seed=1),
                               budget=pipeline.Budget(max_forwards=10**6, max_paths=10**7))
    assert reference.paths and chunked.paths == reference.paths
    assert chunked.forwards == reference.forwards


def test_decode_spans_limit_raises_before_building_hits(tok):
    forward_windows = []
    pipeline.extract(TEXT, parse_schema({"人物": None}), tok,
                     lambda ws, reduce: forward_windows.extend(ws) or [None] * len(ws))
    (w,) = forward_windows
    logits = np.full((len(w), len(w)), 5.0, dtype=np.float32)
    n = w.text_end - w.nh
    assert len(decode_spans(w, logits, limit=n * (n + 1) // 2)) == n * (n + 1) // 2
    with pytest.raises(TooManySpans) as e:
        decode_spans(w, logits, limit=n * (n + 1) // 2 - 1)
    assert e.value.count == n * (n + 1) // 2
