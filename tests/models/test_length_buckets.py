"""Forwards pad up the length ladder (app/engine/shapes.py): each model's forwards meet only the ladder's rungs,
and give what padding to the longest row gives (the attention mask hides the extra cells) — for the embedder, the
cross-encoder and RexUniNLU, against the same adapter with `length_buckets` off."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from window_recorder import Recorder

from app.engine.shapes import bucket_length
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter
from app.models.uninlu.adapter import NluAdapter
from app.models.uninlu.fixture import build_rex_uninlu

LENGTHS = (1, 5, 9, 30, 63, 70, 100, 130, 200, 300)  # characters: one token each, plus [CLS] and [SEP]
TEXTS = ["文" * k for k in LENGTHS]
RUNGS = {bucket_length(n) for n in range(1, 513)}


class Widths:
    """The padded width of every forward a module runs (a forward pre-hook on its first tensor input)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seen: list[int] = []
        self.handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, args, kwargs):  # noqa: ANN001, ANN202
        first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        self.seen.append(int(first.shape[1]))

    def __enter__(self) -> Widths:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@pytest.fixture(scope="module")
def plans(cpu_plan):
    assert cpu_plan.length_buckets, "on by default"
    return {"on": cpu_plan, "off": dataclasses.replace(cpu_plan, length_buckets=False)}


def test_the_embedders_forwards_meet_only_rungs_and_give_the_same_vectors(tiny_dirs, plans):
    got = {}
    for key, plan in plans.items():
        adapter = EmbeddingAdapter(tiny_dirs["embed"], plan)
        with Widths(adapter.model) as widths:
            got[key] = adapter.embed(TEXTS, max_batch_tokens=700, max_batch_size=4).vectors
        got[key + "_widths"] = widths.seen
    assert set(got["on_widths"]) <= RUNGS
    assert 302 in got["off_widths"] and 302 not in RUNGS  # off: the longest row, 300 characters + 2
    assert 320 in got["on_widths"]
    assert np.allclose(got["on"], got["off"], atol=1e-5)


def test_the_cross_encoders_forwards_meet_only_rungs_and_give_the_same_scores(tiny_dirs, plans):
    first, second = TEXTS, TEXTS[::-1]
    got = {}
    for key, plan in plans.items():
        adapter = CrossEncoderAdapter(tiny_dirs["cross"], plan)
        with Widths(adapter.model) as widths:
            got[key] = adapter.score(first, second, max_batch_tokens=2000, max_batch_size=3).scores
        got[key + "_widths"] = widths.seen
    assert set(got["on_widths"]) <= RUNGS
    assert not set(got["off_widths"]) <= RUNGS  # 1+300+3 = 304 tokens, among others, off the ladder
    assert np.allclose(got["on"], got["off"], atol=1e-5)


def test_rexuninlus_windows_meet_only_rungs_and_give_the_same_logits_and_spans(tmp_path, plans):
    rex = build_rex_uninlu(tmp_path / "rex-uninlu")
    sentence = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"
    texts = [sentence, sentence * 3, sentence * 25]  # the last is cut into overflow windows
    schema = {"人物": None, "地理位置": None, "组织机构": None}
    adapters = {key: NluAdapter(rex, plan) for key, plan in plans.items()}
    got = {}
    for key, adapter in adapters.items():
        with Widths(adapter.model) as widths, Recorder(adapter) as rec:
            got[key] = [adapter.infer(text, schema) for text in texts]
        got[key + "_widths"] = widths.seen
        got[key + "_windows"] = rec.windows
    assert set(got["on_widths"]) <= RUNGS
    assert not set(got["off_widths"]) <= RUNGS
    assert got["on"] == got["off"]
    windows = got["on_windows"]
    on = adapters["on"].window_logits(windows, max_batch_size=4)
    off = adapters["off"].window_logits(windows, max_batch_size=4)
    assert len(windows) >= 3 and len(on) == len(off) == len(windows)
    assert all(a.shape == b.shape and np.allclose(a, b, atol=1e-5) for a, b in zip(on, off, strict=True))
