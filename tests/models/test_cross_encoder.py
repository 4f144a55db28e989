"""StructBERT cross-encoder against a plain transformers forward on the same weights."""

from __future__ import annotations

import json

import pytest
import torch

from app.errors import ModelUnavailableError
from app.models.cross_encoder import CrossEncoderAdapter, positive_label

PAIRS = [("我喜欢这部电影", "这部电影很好"), ("北京天安门", "上海"), ("今天天气很好", "今天天气很好"),
         ("abc", "北京大学，" * 30)]


def reference_probs(model_dir, pairs):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    cfg = json.loads((model_dir / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "id2label", "label2id")}
    model = BertForSequenceClassification(BertConfig(**cfg, num_labels=2)).eval()
    model.load_state_dict(torch.load(model_dir / "pytorch_model.bin"))
    tok = BertTokenizerFast.from_pretrained(str(model_dir))
    out = []
    with torch.no_grad():
        for a, b in pairs:
            enc = tok(a, b, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits, -1)[0, 1].item())
    return out


@pytest.mark.parametrize("plan_name", ["cpu_plan", "ds_plan"])
def test_probabilities_match_plain_forward(request, tiny_dirs, plan_name):
    plan = request.getfixturevalue(plan_name)
    ce = CrossEncoderAdapter(tiny_dirs["cross"], plan)
    got = ce.score([a for a, _ in PAIRS], [b for _, b in PAIRS], max_batch_tokens=128, max_batch_size=2)
    ref = reference_probs(tiny_dirs["cross"], PAIRS)
    assert all(abs(g - r) <= 1e-5 for g, r in zip(got.scores, ref, strict=True)), (got.scores, ref)
    assert got.truncated == [False] * 4
    assert max(got.scores) - min(got.scores) > 0.01  # random weights still tell pairs apart


def test_over_long_pairs_are_cut_and_flagged(tiny_dirs, cpu_plan):
    ce = CrossEncoderAdapter(tiny_dirs["cross"], cpu_plan, max_length_cap=16)
    got = ce.score(["北京", "北京"], ["上海", "北京大学，" * 10])
    assert got.truncated == [False, True]


def test_configuration_json_limit_wins_over_the_position_table(tmp_path, cpu_plan):
    from app.models.fixtures import build_structbert

    ce = CrossEncoderAdapter(build_structbert(tmp_path / "structbert-12", max_length=12), cpu_plan)
    assert ce.max_length == 12 and ce.info.max_length == 12
    # 4 + 5 + 3 = 12 tokens fits exactly; one character more is cut (and scores as the exact pair)
    got = ce.score(["北京天安", "北京天安"], ["上海西班牙", "上海西班牙门"])
    assert got.truncated == [False, True]
    assert abs(got.scores[1] - got.scores[0]) <= 1e-6


def test_positive_label_by_name():
    assert positive_label({"id2label": {"0": "0", "1": "1"}}, "x") == 1
    assert positive_label({"id2label": {"0": "similar", "1": "dissimilar"}}, "x") == 0
    assert positive_label({"num_labels": 2}, "x") == 1
    with pytest.raises(ModelUnavailableError) as e:
        positive_label({"id2label": {"0": "a", "1": "b"}}, "/m")
    assert "cannot tell which label" in e.value.message
