"""RexUniNLU schemas of many types end to end on the tiny random-weight checkpoint: an 80-label intent schema
(classify and multi_classify) and a 512-type schema (extract and classify) run through the adapter in several
hint splits; 513 types are refused; a schema that costs more passes than the budget is refused before it runs.

Independent references: the fast tokenizer's own overflow windows for the forward count, and each window's
logits (run again, one call per window) read by the spec's rules for the labels the adapter chose. The tiny
model's random weights find no label for these texts, so classification takes the reference's fallback here;
labels found in several splits, ties and the order are pinned on planted logits in
tests/unit/test_uninlu_many_types.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from window_recorder import Recorder

from app.errors import BudgetExceededError, InputError
from app.models.uninlu.adapter import NluAdapter
from app.models.uninlu.fixture import build_rex_uninlu
from app.models.uninlu.schema import parse_schema, schema_paths

ACTIONS = ["查询", "取消", "修改", "预订", "投诉", "咨询", "办理", "开通"]
OBJECTS = ["订单", "账户", "密码", "快递", "发票", "会员", "套餐", "退款", "积分", "地址"]
INTENTS = {a + o: None for a in ACTIONS for o in OBJECTS}  # 80 intents
TYPES_512 = {f"实体{i:03d}": None for i in range(512)}
UTTERANCE = "我想查一下昨天下的订单到哪了"
TEXT = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"
EPS = 2e-4  # scores are rounded to 4 digits; batched and one-window logits agree to ~1e-6


@pytest.fixture(scope="module")
def nlu(tmp_path_factory, cpu_plan):
    return NluAdapter(build_rex_uninlu(tmp_path_factory.mktemp("rex") / "rex-uninlu"), cpu_plan, name="rex-tiny")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def label_confidences(nlu, windows):
    """(label, found, confidence) for every label in prompt order, read off each window's own logits."""
    out = []
    for w in windows:
        (logits,) = nlu.window_logits([w])
        m = w.nh
        for anchor, t in zip(w.hint.anchors, w.anchor_tokens, strict=True):
            cells = [logits[m, m], logits[m, t], logits[t, m]]
            out.append((anchor.type, all(c > 0 for c in cells), round(float(sigmoid(cells).mean()), 4)))
    return out


def test_eighty_intents_classify_in_two_hints_as_the_logits_say(nlu):
    with Recorder(nlu) as rec:
        result = nlu.infer(UTTERANCE, INTENTS, "classify")
    assert rec.count == 2 and [len(w.hint.anchors) for w in rec.windows] == [50, 30]
    assert [w.hint.split for w in rec.windows] == [0, 1]
    labels = label_confidences(nlu, rec.windows)
    assert [lab for lab, _, _ in labels] == sorted(INTENTS)
    # Flat labels: the best confidence among the found ones (all of them when none is found). The adapter
    # batched the two windows, this reading ran them one by one: equal to float32 rounding (EPS), so a label
    # within EPS of the best could have won too.
    pool = {lab: c for lab, found, c in labels if found} or {lab: c for lab, _, c in labels}
    assert result["truncated"] is False and len(result["output"]) == 1
    (el,) = result["output"][0]
    assert el["type"] in pool and el["score"] == pytest.approx(pool[el["type"]], abs=EPS)
    assert el["score"] >= max(pool.values()) - EPS


def test_eighty_intents_multi_classify_keeps_what_the_logits_say(nlu):
    with Recorder(nlu) as rec:
        result = nlu.infer("[MULTICLASSIFY]" + UTTERANCE, INTENTS)
    assert result["task"] == "multi_classify" and rec.count == 2
    labels = label_confidences(nlu, rec.windows)
    pool = {lab: c for lab, found, c in labels if found} or {lab: c for lab, _, c in labels}
    got = [p[0]["type"] for p in result["output"]]
    assert got == [lab for lab in pool if lab in got]  # prompt order, split by split
    for p in result["output"]:
        assert p[0]["score"] == pytest.approx(pool[p[0]["type"]], abs=EPS)
    if max(pool.values()) > 0.9 + EPS:  # the labels above 0.9, else the single best
        assert {lab for lab, c in pool.items() if c > 0.9 + EPS} <= set(got)
        assert all(pool[lab] > 0.9 - EPS for lab in got)
    else:
        assert len(got) == 1 and pool[got[0]] >= max(pool.values()) - EPS


def test_512_types_extract_in_thirteen_hints(nlu):
    with Recorder(nlu) as rec:
        result = nlu.infer(TEXT, TYPES_512)
    hints = {}
    for w in rec.windows:
        hints.setdefault(w.hint.text, []).append(w)
    assert len(hints) == 13 and sum(len(w.hint.anchors) for ws in hints.values() for w in ws[:1]) == 512
    assert all(w.nh == w.hint.tokens <= 256 for w in rec.windows)
    # forward passes = Σ over hint splits of the fast tokenizer's own overflow windows
    want = sum(len(nlu.tokenizer._tok(h, TEXT, truncation="only_second", max_length=512, stride=32,
                                      return_overflowing_tokens=True)["input_ids"]) for h in hints)
    assert rec.count == len(rec.windows) == want == 13
    legal = schema_paths(parse_schema(TYPES_512))
    assert result["output"], "random weights find some spans"
    for (el,) in result["output"]:
        assert (el["type"],) in legal and TEXT[el["offset"][0]: el["offset"][1]] == el["span"]
    # Split by split: the types of the output never go back to an earlier hint.
    split_of = {a.type: w.hint.split for w in rec.windows for a in w.hint.anchors}
    order = [split_of[p[0]["type"]] for p in result["output"]]
    assert order == sorted(order) and len(set(order)) > 1


def test_512_labels_classify_one_pass_per_hint(nlu):
    with Recorder(nlu) as rec:
        result = nlu.infer(UTTERANCE, TYPES_512, "classify")
    assert rec.count == 13 and len(result["output"]) == 1 and result["output"][0][0]["type"] in TYPES_512


def test_513_types_are_refused_before_anything_runs(nlu):
    before = nlu.forward_count
    with pytest.raises(InputError) as err:
        nlu.infer(TEXT, {**TYPES_512, "实体512": None})
    assert "more than 512 types" in err.value.message and "split it into several requests" in err.value.message
    assert nlu.forward_count == before


def test_a_schema_past_the_forward_budget_is_refused_before_it_runs(nlu):
    before = nlu.forward_count
    with pytest.raises(BudgetExceededError) as err:
        nlu.infer(TEXT * 15, TYPES_512, max_forwards=24)  # needs 25: 12 full hints × 2 windows + 1
    assert "more than 24 model passes" in err.value.message and "WENMO_NLU_MAX_FORWARDS" in err.value.message
    assert nlu.forward_count == before
    with pytest.raises(BudgetExceededError, match="more than 12 model passes"):
        nlu.infer(UTTERANCE, TYPES_512, "classify", max_forwards=12)  # needs 13: one per hint
    assert nlu.forward_count == before
    assert len(nlu.infer(UTTERANCE, TYPES_512, "classify", max_forwards=13)["output"]) == 1
    assert nlu.forward_count == before + 13
