"""GTE embedder against an independent reference: plain transformers, one text at a time, fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.errors import ModelUnavailableError
from app.models.embedding import EmbeddingAdapter
from app.models.fixtures import build_gte

TEXTS = ["北京天安门", "我喜欢这部电影，音乐很好", "上海", "今天天气很好，我们去公园", "abc 123", "电影"]


def reference_vectors(model_dir, texts, pooler="cls", max_len=512):
    """transformers' own BertModel.from_pretrained (it strips the `bert.` prefix itself), batch size 1."""
    from transformers import BertModel, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=max_len)
            res = model(**enc, output_hidden_states=True)
            if pooler == "cls":
                v = res.last_hidden_state[0, 0]
            elif pooler == "avg":
                v = res.last_hidden_state[0].mean(0)
            elif pooler == "avg_top2":
                v = ((res.hidden_states[-1] + res.hidden_states[-2]) / 2)[0].mean(0)
            else:
                v = ((res.hidden_states[1] + res.hidden_states[-1]) / 2)[0].mean(0)
            out.append(torch.nn.functional.normalize(v, dim=0).numpy())
    return np.stack(out)


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def embedder(tiny_dirs, cpu_plan):
    return EmbeddingAdapter(tiny_dirs["embed"], cpu_plan)


def test_matches_plain_transformers_reference(embedder, tiny_dirs):
    got = embedder.embed(TEXTS, max_batch_tokens=64, max_batch_size=4)  # several batches, mixed lengths
    ref = reference_vectors(tiny_dirs["embed"], TEXTS)
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(TEXTS), 32)
    assert cosines(got.vectors, ref).min() >= 0.99999
    assert np.allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-5)
    # the weights are spread widely enough that different texts really differ
    sims = got.vectors @ got.vectors.T
    assert sims[np.triu_indices(len(TEXTS), 1)].max() < 0.98


def test_deepspeed_engine_matches_reference(tiny_dirs, ds_plan):
    ds_embedder = EmbeddingAdapter(tiny_dirs["embed"], ds_plan)
    assert type(ds_embedder.model).__name__ == "InferenceEngine"
    got = ds_embedder.embed(TEXTS)
    assert cosines(got.vectors, reference_vectors(tiny_dirs["embed"], TEXTS)).min() >= 0.99999


def test_vector_does_not_depend_on_batch_mates(embedder):
    alone = embedder.embed(["上海"]).vectors[0]
    crowd = embedder.embed(["上海", "今天天气很好，我们去公园，" * 20, "北京"], max_batch_tokens=10_000).vectors[0]
    assert float(alone @ crowd) >= 0.99999
    assert np.allclose(alone, crowd, atol=1e-5)


def test_order_restored_across_batches(embedder):
    texts = ["上海" * (i % 7 + 1) for i in range(20)]
    together = embedder.embed(texts, max_batch_tokens=40, max_batch_size=3).vectors
    one_by_one = np.stack([embedder.embed([t]).vectors[0] for t in texts])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_truncation_is_flagged_not_silent(tiny_dirs, cpu_plan):
    short = EmbeddingAdapter(tiny_dirs["embed"], cpu_plan, max_length_cap=8)
    r = short.embed(["北京", "北京天安门上海北京天安门"])
    assert r.truncated == [False, True]
    assert r.token_counts == [4, 8]
    # the cut text equals the embedding of its first 6 characters (+ CLS/SEP)
    assert np.allclose(r.vectors[1], short.embed(["北京天安门上"]).vectors[0], atol=1e-5)


def test_model_max_length_comes_from_the_files(embedder):
    assert embedder.max_length == 512 and embedder.info.max_length == 512


def test_configuration_json_limit_wins_over_the_position_table(tmp_path, cpu_plan):
    # configuration.json says 24 while config.json's position table has 512 entries: 24 is the limit
    short = EmbeddingAdapter(build_gte(tmp_path / "gte-24", max_length=24), cpu_plan)
    assert short.max_length == 24 and short.info.max_length == 24
    exact, over = "北京天安门" * 4 + "上海", "北京天安门" * 4 + "上海西"  # 22 + 2 = 24 tokens, then 25
    r = short.embed([exact, over])
    assert r.truncated == [False, True] and r.token_counts == [24, 24]
    assert np.allclose(r.vectors[1], r.vectors[0], atol=1e-5)  # the cut one is the exact one


def test_raw_vectors_when_not_normalized(embedder):
    raw = embedder.embed(["北京"], normalize=False).vectors[0]
    unit = embedder.embed(["北京"]).vectors[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    assert np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-6)


@pytest.mark.parametrize("prefix, fmt", [("", "bin"), ("bert.", "safetensors")])
def test_checkpoint_variants_load_to_the_same_vectors(tmp_path, embedder, cpu_plan, prefix, fmt):
    other = EmbeddingAdapter(build_gte(tmp_path / "gte", prefix=prefix, fmt=fmt), cpu_plan)
    assert np.allclose(other.embed(TEXTS).vectors, embedder.embed(TEXTS).vectors, atol=1e-6)


@pytest.mark.parametrize("pooler", ["avg", "avg_top2", "avg_first_last"])
def test_poolers_match_reference(tmp_path, cpu_plan, pooler):
    d = build_gte(tmp_path / pooler, pooler=pooler)
    got = EmbeddingAdapter(d, cpu_plan).embed(TEXTS, max_batch_tokens=50)
    assert cosines(got.vectors, reference_vectors(d, TEXTS, pooler)).min() >= 0.99999


def test_wrong_checkpoint_is_a_clear_error(tmp_path, tiny_dirs, cpu_plan):
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(tiny_dirs["embed"], d)
    torch.save({"foo.weight": torch.zeros(2)}, d / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError) as e:
        EmbeddingAdapter(d, cpu_plan)
    assert "lacks" in e.value.message and "not a checkpoint of this model family" in e.value.message


def test_padded_rows_equal_the_tokenizers_own_padding(tiny_dirs):
    """pad_rows against an independent reference: the tokenizer's own `padding=True` tensors, for texts and pairs."""
    from app.models.checkpoint import load_tokenizer
    from app.models.encoding import encode_pairs, encode_texts, pad_rows

    tok = load_tokenizer(tiny_dirs["embed"])
    texts = ["北京", "我喜欢这部电影，音乐很好", "上海", "今天天气很好" * 5]
    want = tok(texts, padding=True, return_tensors="pt")
    got = pad_rows(encode_texts(tok, texts, 512).rows, tok.pad_token_id, "cpu")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    want = tok(texts[:2], texts[2:], padding=True, return_tensors="pt")
    got = pad_rows(encode_pairs(tok, texts[:2], texts[2:], 512).rows, tok.pad_token_id, "cpu")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(got[key], want[key]), key
