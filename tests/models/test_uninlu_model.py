"""RexUniNLU adapter on a tiny random-weight checkpoint in the real layout (spec §8).

Independent references: the disentangled attention and the rotary head re-implemented here from the spec's
formulas (float64, batch size 1); the stock transformers DeBERTa-v2 layers driven as the spec's recipe says;
the fast tokenizer's own overflow windows for the forward-pass count.
"""

from __future__ import annotations

import json
import math
import shutil
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from window_recorder import Recorder

from app.errors import InputError, ModelUnavailableError
from app.models.uninlu.adapter import NluAdapter
from app.models.uninlu.decode import decode_spans
from app.models.uninlu.fixture import build_rex_uninlu, rex_vocab
from app.models.uninlu.presets import presets
from app.models.uninlu.prompt import prefix_string
from app.models.uninlu.schema import parse_schema, schema_paths

NER_TEXT = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"
NER_SCHEMA = {"人物": None, "地理位置": None, "组织机构": None}
RE_SCHEMA = {"组织机构": {"创始人(人物)": None, "总部(地理位置)": None}, "人物": None}


@pytest.fixture(scope="module")
def rex_dir(tmp_path_factory):
    return build_rex_uninlu(tmp_path_factory.mktemp("rex") / "rex-uninlu")


@pytest.fixture(scope="module")
def nlu(rex_dir, cpu_plan):
    return NluAdapter(rex_dir, cpu_plan, name="rex-tiny")


def hf_window_count(nlu, hint, text, task="extract"):
    """How many windows the fast tokenizer itself cuts (hint, text) into: the reference's forward passes."""
    enc = nlu.tokenizer._tok(hint, text, truncation="only_second", max_length=512,
                             stride=32 if task == "extract" else 0, return_overflowing_tokens=True)
    return len(enc["input_ids"]) if task == "extract" else 1


# -- loading ----------------------------------------------------------------------------------------------------

def test_loading_reads_sizes_from_the_files(nlu, rex_dir):
    config = json.loads((rex_dir / "config.json").read_text())
    vocab = (rex_dir / "vocab.txt").read_text().split("\n")[:-1]
    V = config["vocab_size"]
    assert V == len(vocab) == len(rex_vocab()) and vocab[:3] == ["[PAD]", "[CLS]", "[SEP]"]
    tok = nlu.tokenizer
    assert (tok.prefix_id, tok.type_id, tok.classify_id, tok.multi_classify_id) == (V, V + 1, V + 2, V + 3)
    assert (tok.pad_id, tok.cls_id, tok.sep_id) == (0, 1, 2)
    plm = nlu._module.plm
    assert plm.embeddings.word_embeddings.weight.shape == (V + 4, 32)
    assert plm.config.position_buckets == 256 and plm.config.max_relative_positions == -1
    assert plm.config.pos_att_type == ["c2p", "p2c"] and plm.config.conv_act == "gelu"
    assert plm.encoder.rel_embeddings.weight.shape == (512, 32)
    assert plm.embeddings.position_embeddings is None and plm.embeddings.token_type_embeddings is None
    assert nlu.info.as_dict() == {"family": "nlu", "name": "rex-tiny", "path": str(rex_dir), "max_length": 512,
                                  "dimension": None, "device": "cpu", "dtype": "fp32", "engine": "torch"}
    state = torch.load(rex_dir / "pytorch_model.bin", weights_only=True)
    assert {"ffnq.weight", "ffnq.bias", "ffnk.weight", "ffnk.bias", "rotary_emb.freqs",
            "plm.encoder.conv.conv.weight", "plm.encoder.LayerNorm.weight"} <= set(state)
    assert all(k.startswith(("plm.", "ffnq.", "ffnk.", "rotary_emb.")) for k in state)
    assert torch.allclose(state["rotary_emb.freqs"], 1 / 10000 ** (torch.arange(0, 32, 2).float() / 32))
    configuration = json.loads((rex_dir / "configuration.json").read_text())
    assert configuration["task"] == "rex-uninlu" and configuration["framework"] == "pytorch"


def test_safetensors_checkpoint_gives_the_same_logits(nlu, tmp_path, cpu_plan):
    st_dir = build_rex_uninlu(tmp_path / "st", fmt="safetensors")
    assert (st_dir / "model.safetensors").exists() and not (st_dir / "pytorch_model.bin").exists()
    other = NluAdapter(st_dir, cpu_plan)
    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT, NER_SCHEMA)
    a, b = nlu.window_logits(rec.windows), other.window_logits(rec.windows)
    assert np.array_equal(a[0], b[0])
    assert other.infer(NER_TEXT, NER_SCHEMA) == nlu.infer(NER_TEXT, NER_SCHEMA)


def _copy(rex_dir, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(rex_dir, d)
    return d


def test_vocab_that_does_not_match_the_config_is_refused(rex_dir, tmp_path, cpu_plan):
    d = _copy(rex_dir, tmp_path)
    lines = (d / "vocab.txt").read_text().split("\n")
    (d / "vocab.txt").write_text("\n".join(lines[:-3] + [""]))
    with pytest.raises(ModelUnavailableError, match="vocab.txt has .* distinct entries but config.json says"):
        NluAdapter(d, cpu_plan)


def test_embedding_rows_that_do_not_match_are_refused(rex_dir, tmp_path, cpu_plan):
    d = _copy(rex_dir, tmp_path)
    state = torch.load(d / "pytorch_model.bin", weights_only=True)
    key = "plm.embeddings.word_embeddings.weight"
    state[key] = state[key][:-4]
    torch.save(state, d / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match=r"have \d+ rows, expected vocab_size \d+ \+ 4 prompt tokens"):
        NluAdapter(d, cpu_plan)


def test_wrong_model_type_is_refused(rex_dir, tmp_path, cpu_plan):
    d = _copy(rex_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "bert"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailableError, match="model_type is 'bert', expected 'deberta-v2'"):
        NluAdapter(d, cpu_plan)


def test_missing_rotary_freqs_and_extra_keys_are_tolerated(rex_dir, tmp_path, cpu_plan, nlu):
    d = _copy(rex_dir, tmp_path)
    state = torch.load(d / "pytorch_model.bin", weights_only=True)
    del state["rotary_emb.freqs"]
    state["plm.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save(state, d / "pytorch_model.bin")
    assert NluAdapter(d, cpu_plan).infer(NER_TEXT, NER_SCHEMA) == nlu.infer(NER_TEXT, NER_SCHEMA)


# -- the network against independent references -----------------------------------------------------------------

def reference_logits(rex_dir, ids, pos, mask):
    """The spec's formulas, float64, batch size 1, straight from the checkpoint's tensors."""
    cfg = json.loads((rex_dir / "config.json").read_text())
    W = {k: v.double() for k, v in torch.load(rex_dir / "pytorch_model.bin", weights_only=True).items()}
    H, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = H // heads
    S = cfg["position_buckets"]

    def ln(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * W[name + ".weight"] + W[name + ".bias"]

    def lin(x, name):
        return x @ W[name + ".weight"].T + W[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    ids = torch.tensor(ids)
    pos = torch.tensor(pos)
    mask = torch.tensor(mask).bool()
    L = len(ids)
    emb = ln(W["plm.embeddings.word_embeddings.weight"][ids], "plm.embeddings.LayerNorm")
    rel = pos[:, None] - pos[None, :]
    c = torch.clamp(rel + S, 0, 2 * S - 1)
    rel_emb = ln(W["plm.encoder.rel_embeddings.weight"], "plm.encoder.LayerNorm")
    h = emb
    for n in range(cfg["num_hidden_layers"]):
        p = f"plm.encoder.layer.{n}."
        Q, K, V = (lin(h, p + f"attention.self.{x}_proj") for x in ("query", "key", "value"))
        PQ, PK = lin(rel_emb, p + "attention.self.query_proj"), lin(rel_emb, p + "attention.self.key_proj")
        ctx = torch.zeros(L, H, dtype=torch.float64)
        for a in range(heads):
            sl = slice(a * d, (a + 1) * d)
            q, k, v, pq, pk = Q[:, sl], K[:, sl], V[:, sl], PQ[:, sl], PK[:, sl]
            # score[i, j] = q_i·k_j + q_i·PK[c_ij] + k_j·PQ[c_ij]
            score = q @ k.T + torch.einsum("id,ijd->ij", q, pk[c]) + torch.einsum("jd,ijd->ij", k, pq[c])
            score = score / math.sqrt(3 * d)
            score = score.masked_fill(~mask, float("-inf"))
            ctx[:, sl] = torch.softmax(score, -1) @ v
        att = ln(lin(ctx, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
        out = ln(lin(gelu(lin(att, p + "intermediate.dense")), p + "output.dense") + att, p + "output.LayerNorm")
        if n == 0:
            conv = torch.nn.functional.conv1d(emb.T[None], W["plm.encoder.conv.conv.weight"],
                                              W["plm.encoder.conv.conv.bias"], padding=1)[0].T
            out = ln(out + gelu(conv), "plm.encoder.conv.LayerNorm")
        h = out

    freqs = 1 / 10000 ** (torch.arange(0, H, 2, dtype=torch.float64) / H)

    def rope(x):  # complex form: (x0 + i·x1) · e^{i·pos·f}
        z = torch.complex(x[:, 0::2], x[:, 1::2]) * torch.exp(1j * pos[:, None].double() * freqs[None])
        return torch.stack([z.real, z.imag], -1).reshape(L, H)

    return h, rope(lin(h, "ffnq")) @ rope(lin(h, "ffnk")).T


def test_backbone_and_head_match_the_spec_formulas(nlu, rex_dir):
    from app.models.uninlu.backbone import encode

    schema = parse_schema(RE_SCHEMA)
    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT, schema)
    w = next(w for w in rec.windows if w.level == 1)  # a multi-group prompt, so the mask matters
    mask = w.attention_mask()
    assert not mask.all()
    ref_hidden, ref_logits = reference_logits(rex_dir, w.input_ids, w.position_ids, mask)
    ids, positions, mask_t = torch.tensor([w.input_ids]), torch.tensor([w.position_ids]), torch.tensor(mask[None] > 0)
    with torch.inference_mode():
        hidden = encode(nlu._module.plm, ids, positions, mask_t)[0]
    assert torch.allclose(hidden.double(), ref_hidden, atol=1e-5, rtol=0)
    (logits,) = nlu.window_logits([w])
    scale = float(ref_logits.abs().max())
    assert scale > 1 and np.allclose(logits, ref_logits.numpy(), atol=1e-5 * scale, rtol=0)
    assert ((logits > 0) == (ref_logits.numpy() > 0)).mean() > 0.999


def test_backbone_matches_stock_transformers_layers_at_batch_size_one(nlu):
    """The spec's recipe: stock DebertaV2Layer modules with a (1, 1, L, L) mask and our relative positions."""
    from app.models.uninlu.backbone import encode

    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT, RE_SCHEMA)
    w = rec.windows[-1]
    plm = nlu._module.plm
    ids = torch.tensor([w.input_ids])
    pos = torch.tensor([w.position_ids])
    mask = torch.tensor(w.attention_mask()[None] > 0)
    with torch.inference_mode():
        emb = plm.embeddings(input_ids=ids)
        rel = (pos[:, :, None] - pos[:, None, :]).long()
        hidden = emb
        for i, layer in enumerate(plm.encoder.layer):
            hidden, _ = layer(hidden, mask[:, None].long(), relative_pos=rel,
                              rel_embeddings=plm.encoder.get_rel_embedding())
            if i == 0:
                hidden = plm.encoder.conv(emb, hidden, torch.ones_like(ids))
        ours = encode(plm, ids, pos, mask)
    assert torch.allclose(ours, hidden, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def re_windows(nlu):
    """The windows of a two-level relation walk: several prompts of different lengths and groups."""
    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT * 2 + "尾", RE_SCHEMA)
    return rec.windows


def test_batched_forward_equals_one_window_per_forward(nlu, re_windows):
    windows = re_windows
    assert len({len(w) for w in windows}) > 2  # different lengths: padding is exercised
    single = nlu.window_logits(windows, max_batch_size=1)
    batched = nlu.window_logits(windows, max_batch_tokens=1 << 20, max_batch_size=64)
    for a, b in zip(single, batched, strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5, rtol=0)


def test_collated_batch_mask_equals_each_windows_mask(nlu, re_windows):
    windows = re_windows[:6]
    assert len({len(w) for w in windows}) > 1
    ids, positions, mask = nlu._collate(windows)
    for row, w in enumerate(windows):
        n = len(w)
        assert ids[row, :n].tolist() == list(w.input_ids) and (ids[row, n:] == 0).all()
        assert positions[row, :n].tolist() == list(w.position_ids)
        assert np.array_equal(mask[row, :n, :n].numpy(), w.attention_mask() > 0)
        assert not mask[row, n:].any() and not mask[row, :, n:].any()
        assert torch.equal(mask[row], mask[row].T)


def test_deepspeed_engine_equals_torch(nlu, rex_dir, ds_plan):
    ds_nlu = NluAdapter(rex_dir, ds_plan)
    assert ds_nlu.info.engine == "deepspeed" and type(ds_nlu.model).__name__ == "InferenceEngine"
    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT, RE_SCHEMA)
    for a, b in zip(nlu.window_logits(rec.windows), ds_nlu.window_logits(rec.windows), strict=True):
        assert np.allclose(a, b, atol=1e-5, rtol=0)
    assert ds_nlu.infer(NER_TEXT, RE_SCHEMA) == nlu.infer(NER_TEXT, RE_SCHEMA)


# -- the spec §8 properties on random weights -------------------------------------------------------------------

def test_model_card_ner_prompt_tensors(nlu):
    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT, NER_SCHEMA)
    (w,) = rec.windows
    assert rec.count == 1
    toks = nlu.tokenizer.convert_ids_to_tokens(w.input_ids)
    assert toks[:16] == ["[CLS]", "[PREFIX]", "[TYPE]", "人", "物", "[TYPE]", "地", "理", "位", "置", "[TYPE]",
                         "组", "织", "机", "构", "[SEP]"]
    assert w.nh == 16 and list(w.position_ids[:18]) == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 7, 8, 9]
    assert list(w.position_ids[15:]) == list(range(7, 7 + len(w) - 15))
    ref = nlu.tokenizer._tok(w.hint.text, NER_TEXT)
    assert list(w.input_ids) == ref["input_ids"]


def check_result(nlu, text, schema, result, windows, count, task="extract"):
    parsed = parse_schema(schema)
    legal = schema_paths(parsed)
    assert set(result) == {"task", "output", "truncated"} and result["task"] == task
    assert result["truncated"] is False
    seen = set()
    for path in result["output"]:
        types = tuple(el["type"] for el in path)
        assert types in legal  # a root-to-leaf path of the schema
        ident = tuple((el["type"], *el["offset"]) for el in path)
        assert ident not in seen  # no duplicate paths
        seen.add(ident)
        for el in path:
            start, end = el["offset"]
            assert text[start:end] == el["span"] and end > start  # offsets into the original text, never empty
            assert 0.5 < el["score"] <= 1.0  # three cells > 0 each
        for j in range(1, len(path)):  # every ancestor was found one level up and prefixes this level
            prefix = ",".join(f"{el['type']}: {el['span']}" for el in path[:j])
            assert any(w.level == j and f"[PREFIX]{prefix}[TYPE]" in w.hint.text for w in windows)
    # forward passes = Σ over levels of Σ over hint splits of that split's windows (the tokenizer's own count)
    by_level = {}
    for w in windows:
        by_level.setdefault(w.level, {}).setdefault(w.hint.text, set()).add(w.index)
    assert sorted(by_level) == list(range(len(by_level)))
    expected = sum(hf_window_count(nlu, hint, text) for hints in by_level.values() for hint in hints)
    assert count == len(windows) == expected
    for hints in by_level.values():
        for hint, indices in hints.items():
            assert indices == set(range(hf_window_count(nlu, hint, text)))


def test_random_weights_find_spans_that_satisfy_the_properties(nlu):
    for text, schema in [(NER_TEXT, NER_SCHEMA), (NER_TEXT, RE_SCHEMA),
                         ("张三创办了阿里巴巴公司，总部在杭州。 Hello World!", {"A": {"B": {"C": None}}, "D": None})]:
        with Recorder(nlu) as rec:
            result = nlu.infer(text, schema)
        assert result["output"], "random weights should find some spans"
        check_result(nlu, text, schema, result, rec.windows, rec.count)
        assert nlu.infer(text, json.dumps(schema, ensure_ascii=False)) == result  # deterministic, dict = JSON


def test_every_path_element_is_decoded_from_its_own_levels_logits(nlu):
    with Recorder(nlu) as rec:
        result = nlu.infer(NER_TEXT, RE_SCHEMA)
    nested = [p for p in result["output"] if len(p) == 2]
    assert nested
    for path in nested[:4]:
        for j, el in enumerate(path):
            prefix = ",".join(f"{e['type']}: {e['span']}" for e in path[:j])
            hits = []
            for w in rec.windows:
                if w.level != j:
                    continue
                (logits,) = nlu.window_logits([w])
                for h in decode_spans(w, logits):
                    a = w.hint.anchors[h.anchor]
                    span = (w.text_offsets[h.s - w.nh][0], w.text_offsets[h.e - w.nh][1])
                    if prefix_string(a.key) == prefix and a.type == el["type"] and list(span) == el["offset"]:
                        hits.append(round(h.score, 4))
            assert el["score"] in hits


ALPHABET = "北大西洋议会春季会议在班牙巴塞罗那闭幕张三李四创办了公司，。 abc12#😀"
LABELS = ["人物", "地点", "组织机构", "时间", "创始人(人物)", "事件"]


@st.composite
def schemas(draw, depth=3):
    keys = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=2 if depth < 3 else 3, unique=True))
    out = {}
    for k in keys:
        out[k] = draw(schemas(depth - 1)) if depth > 1 and draw(st.booleans()) else None
    return out


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=ALPHABET, min_size=1, max_size=24).filter(str.strip), schema=schemas())
def test_properties_hold_for_any_text_and_schema(nlu, text, schema):
    with Recorder(nlu) as rec:
        result = nlu.infer(text, schema)
    check_result(nlu, text, schema, result, rec.windows, rec.count)
    assert nlu.infer(text, schema) == result


def test_long_text_uses_several_windows_and_several_hint_splits(nlu):
    text = NER_TEXT * 14  # 336 characters, 350 tokens
    # three 100-character types: two fit in a 256-token hint, the third starts a second one
    schema = {"长" * 98 + f"类型{i}": None for i in range(3)}
    with Recorder(nlu) as rec:
        result = nlu.infer(text, schema)
    splits = {w.hint.split for w in rec.windows}
    per_split = {s: max(w.index for w in rec.windows if w.hint.split == s) + 1 for s in splits}
    assert splits == {0, 1} and per_split == {0: 2, 1: 1}
    assert [len(w.hint.anchors) for w in rec.windows] == [2, 2, 1]
    check_result(nlu, text, schema, result, rec.windows, rec.count)
    assert len(result["output"]) > 0


def test_classification_on_random_weights(nlu):
    text = "有点看不下去了，文字也弱了点。"
    with Recorder(nlu) as rec:
        single = nlu.infer(text, {"正向情感": None, "负向情感": None}, "classify")
    assert single["task"] == "classify" and single["truncated"] is False and rec.count == 1
    assert len(single["output"]) == 1 and len(single["output"][0]) == 1
    (el,) = single["output"][0]
    assert el["type"] in ("正向情感", "负向情感") and el["span"] == el["type"] and el["offset"] == [0, 0]
    assert 0 < el["score"] <= 1
    assert nlu.infer("[CLASSIFY]" + text, {"正向情感": None, "负向情感": None}) == single
    multi = nlu.infer("[MULTICLASSIFY]" + text, {"童话": None, "历史": None, "文化": None})
    assert multi["task"] == "multi_classify" and len(multi["output"]) >= 1
    assert all(len(p) == 1 and p[0]["type"] in ("童话", "历史", "文化") for p in multi["output"])
    long = nlu.infer(text * 60, {"正向情感": None, "负向情感": None}, "classify")
    assert long["truncated"] is True and len(long["output"]) == 1


def test_every_preset_runs(nlu):
    for p in presets():
        result = nlu.infer(p["text"], p["schema"], p["task"])
        assert result["task"] == p["task"]
        if p["task"] == "extract":
            for path in result["output"]:
                assert all(p["text"][el["offset"][0]: el["offset"][1]] == el["span"] for el in path)
        else:
            assert len(result["output"]) >= 1


def test_concurrent_calls_give_the_same_results_as_sequential_ones(nlu):
    jobs = [(NER_TEXT, NER_SCHEMA, None), (NER_TEXT, RE_SCHEMA, None),
            ("有点看不下去了", {"正向情感": None, "负向情感": None}, "classify"),
            ("张三创办了阿里巴巴公司", {"A": {"B": None}}, "extract")] * 2
    want = [nlu.infer(*job) for job in jobs]
    got = [None] * len(jobs)
    errors = []

    def work(i):
        try:
            got[i] = nlu.infer(*jobs[i], max_batch_size=3)
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == want


@pytest.mark.parametrize(
    ("text", "schema", "task", "fragment"),
    [
        (NER_TEXT, '{"人物": null', None, "not valid JSON: line 1, column 12"),
        (NER_TEXT, "[1]", None, "must be a JSON object"),
        (NER_TEXT, {}, None, "schema is empty"),
        (NER_TEXT, {1: None}, None, "must be a string"),
        (NER_TEXT, {"a": {"b": {"c": {"d": {"e": None}}}}}, None, "more than 4 levels"),
        (NER_TEXT, {f"t{i}": None for i in range(513)}, None, "more than 512 types"),
        (NER_TEXT, {"a": []}, None, 'schema["a"]: the value is a list'),
        (NER_TEXT, {"a": "x"}, None, 'schema["a"]: the value is a string'),
        ("北京[TYPE]上海", NER_SCHEMA, None, "control token [TYPE] at character 2"),
        ("北京[PREFIX]", NER_SCHEMA, None, "control token [PREFIX]"),
        ("北京[CLASSIFY]", NER_SCHEMA, "classify", "control token [CLASSIFY]"),
        (NER_TEXT, NER_SCHEMA, "ner", "unknown task 'ner'"),
        ("", NER_SCHEMA, None, "text is empty"),
        ("  \n ", NER_SCHEMA, None, "text is empty"),
    ],
)
def test_bad_input_is_an_input_error_and_runs_nothing(nlu, text, schema, task, fragment):
    before = nlu.forward_count
    with pytest.raises(InputError) as err:
        nlu.infer(text, schema, task)
    assert fragment in err.value.message
    assert nlu.forward_count == before


def test_padding_rows_never_change_real_rows(nlu):
    """A short window batched with a long one gives the same logits as alone (zeroed pad embeddings)."""
    with Recorder(nlu) as rec:
        nlu.infer(NER_TEXT, NER_SCHEMA)
        nlu.infer(NER_TEXT * 8, NER_SCHEMA)
    short, long = rec.windows[0], rec.windows[-1]
    assert len(long) > len(short) + 50
    alone = nlu.window_logits([short])[0]
    ids, pos, mask = nlu._collate([long, short])
    with torch.inference_mode():
        together = nlu.model(ids, pos, mask)[1, : len(short), : len(short)].numpy()
    assert np.allclose(alone, together, atol=1e-5, rtol=0)


def test_tokenizer_export_that_carries_the_prompt_tokens_loads_the_same(rex_dir, tmp_path, cpu_plan, nlu):
    from app.models.checkpoint import load_tokenizer
    from app.models.uninlu.schema import ADDED_TOKENS

    d = _copy(rex_dir, tmp_path)
    tok = load_tokenizer(d)
    tok.add_special_tokens({"additional_special_tokens": list(ADDED_TOKENS)})
    tok.save_pretrained(str(d))
    other = NluAdapter(d, cpu_plan)
    assert other.tokenizer.prefix_id == nlu.tokenizer.prefix_id
    assert other.infer(NER_TEXT, RE_SCHEMA) == nlu.infer(NER_TEXT, RE_SCHEMA)


def test_max_length_cap_shrinks_windows_but_keeps_room_for_the_prompt(rex_dir, cpu_plan):
    capped = NluAdapter(rex_dir, cpu_plan, max_length_cap=400)
    assert capped.info.max_length == 400
    with Recorder(capped) as rec:
        capped.infer(NER_TEXT * 20, NER_SCHEMA)
    assert len(rec.windows) >= 2 and max(len(w) for w in rec.windows) == 400
    assert NluAdapter(rex_dir, cpu_plan, max_length_cap=100).info.max_length == 320
    assert NluAdapter(rex_dir, cpu_plan, max_length_cap=4096).info.max_length == 512


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_precision_agrees_with_cpu_fp32(rex_dir, nlu, ds, re_windows):
    from app.engine.runtime import resolve_plan

    cpu = nlu.window_logits(re_windows)
    fp32 = NluAdapter(rex_dir, resolve_plan("cuda", "fp32", "torch", ds))
    for a, b in zip(cpu, fp32.window_logits(re_windows), strict=True):
        assert np.allclose(a, b, atol=1e-4, rtol=0)
    half = NluAdapter(rex_dir, resolve_plan("cuda", "auto", "auto", ds))
    assert half.info.dtype in ("fp16", "bf16") and half._module.rotary_emb.freqs.dtype == torch.float32
    for a, b in zip(cpu, half.window_logits(re_windows), strict=True):
        assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
