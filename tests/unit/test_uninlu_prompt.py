"""RexUniNLU prompts: hint splitting, overflow windows, positions and the 2-D mask (spec §4). No torch.

Expectations are worked by hand from the spec, and checked against an independent re-implementation of the
reference's `build_position_ids_attn_mask` (it scans the token ids) and against the fast tokenizer's own
overflow windows.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.models.uninlu.fixture import rex_vocab, write_rex_tokenizer
from app.models.uninlu.prompt import (
    HINT_MAX_LEN,
    Item,
    PromptTokenizer,
    build_hints,
    build_windows,
    layout_hint,
    prefix_string,
    window_ranges,
)

NER_TEXT = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"
NER_SCHEMA = {"组织机构": None, "人物": None, "地理位置": None}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("rex-tokenizer")
    vocab = rex_vocab()
    write_rex_tokenizer(root, vocab)
    t = PromptTokenizer.from_dir(root)
    assert t.base_vocab == len(vocab)
    return t


def windows_for(tok, groups, text, *, level=0, stride=32, first_only=False, max_len=512):
    ids, offsets = tok.encode(text)
    out = []
    for hint in build_hints(groups, tok.count):
        layout = layout_hint(tok.encode(hint.text)[0], tok.cls_id, tok.prefix_id, tok.type_id)
        out += build_windows(hint, layout, ids, offsets, tok.sep_id, level=level, stride=stride,
                             first_only=first_only, max_len=max_len)
    return out


def reference_positions_and_mask(tok, ids):
    """The reference's algorithm, re-implemented from its description: scan the ids for [PREFIX]/[TYPE]/[SEP]."""
    prefixes = []  # each: {"span": [token idx], "types": [[token idx], …]}
    text = []
    state = "cls"
    for i, t in enumerate(ids[1:], start=1):
        if t == tok.prefix_id:
            prefixes.append({"span": [i], "types": []})
            state = "prefix"
        elif t == tok.type_id:
            prefixes[-1]["types"].append([i])
            state = "type"
        elif t == tok.sep_id:
            text.append(i)
            state = "text"
        elif state == "prefix":
            prefixes[-1]["span"].append(i)
        elif state == "type":
            prefixes[-1]["types"][-1].append(i)
        else:
            text.append(i)
    pos = [0]
    for p in prefixes:
        pos += list(range(1, 1 + len(p["span"])))
        for t in p["types"]:
            pos += list(range(1 + len(p["span"]), 1 + len(p["span"]) + len(t)))
    top = max(pos)
    pos += list(range(top + 1, top + 1 + len(text)))
    n = len(ids)
    mask = np.ones((n, n), dtype=np.int8)
    for i, a in enumerate(prefixes):
        for j, b in enumerate(prefixes):
            if i != j:
                mask[a["span"][0]: a["types"][-1][-1] + 1, b["span"][0]: b["types"][-1][-1] + 1] = 0
    for p in prefixes:
        for i, a in enumerate(p["types"]):
            for j, b in enumerate(p["types"]):
                if i != j:
                    mask[a[0]: a[-1] + 1, b[0]: b[-1] + 1] = 0
    return pos, mask


def test_model_card_ner_prompt_worked_by_hand(tok):
    (w,) = windows_for(tok, [((), NER_SCHEMA)], NER_TEXT)
    tokens = tok.convert_ids_to_tokens(w.input_ids)
    assert tokens[:16] == ["[CLS]", "[PREFIX]", "[TYPE]", "人", "物", "[TYPE]", "地", "理", "位", "置",
                           "[TYPE]", "组", "织", "机", "构", "[SEP]"]
    assert tokens[16:18] == ["北", "大"] and tokens[-1] == "[SEP]"
    assert w.nh == 16
    n_text = len(tok.encode(NER_TEXT)[0])
    assert list(w.position_ids) == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, *range(7, 7 + n_text + 2)]
    assert list(w.position_ids[15:18]) == [7, 8, 9]
    assert [w.hint.anchors[i].type for i in range(3)] == ["人物", "地理位置", "组织机构"]  # sorted by code point
    assert list(w.anchor_tokens) == [2, 5, 10]
    assert w.hint.text == "[PREFIX][TYPE]人物[TYPE]地理位置[TYPE]组织机构"
    mask = w.attention_mask()
    assert (mask == mask.T).all()
    # the three type segments of the one group never see each other; [PREFIX] sees them all
    segs = [range(2, 5), range(5, 10), range(10, 15)]
    for a in segs:
        for b in segs:
            block = mask[np.ix_(list(a), list(b))]
            assert (block == (1 if a == b else 0)).all()
    assert mask[1].all() and mask[:, 1].all() and mask[0].all() and mask[15:].all()
    pos, ref_mask = reference_positions_and_mask(tok, w.input_ids)
    assert list(w.position_ids) == pos and (mask == ref_mask).all()
    # offsets point into the text: the first text token is 北, "26" is two tokens covering [10, 12)
    assert w.text_offsets[0] == (0, 1) and w.text_offsets[10] == (10, 11) and w.text_offsets[11] == (11, 12)


def item(type_, span, text):
    start = text.index(span)
    return Item(type_, span, start, start + len(span), 0.99)


def test_two_prefix_groups_worked_by_hand(tok):
    children = {"总部(地理位置)": None, "创始人(人物)": None}
    groups = [((item("组织机构", "北大西洋议会", NER_TEXT),), children),
              ((item("组织机构", "西班牙", NER_TEXT),), children)]
    (w,) = windows_for(tok, groups, NER_TEXT, level=1)
    assert w.hint.text == ("[PREFIX]组织机构: 北大西洋议会[TYPE]创始人(人物)[TYPE]总部(地理位置)"
                           "[PREFIX]组织机构: 西班牙[TYPE]创始人(人物)[TYPE]总部(地理位置)")
    assert prefix_string(groups[0][0]) == "组织机构: 北大西洋议会"
    g1 = list(range(1, 13)) + list(range(13, 21)) + list(range(13, 22))
    g2 = list(range(1, 10)) + list(range(10, 18)) + list(range(10, 19))
    assert list(w.position_ids[:1 + len(g1) + len(g2)]) == [0, *g1, *g2]
    assert w.nh == 1 + len(g1) + len(g2) + 1 == 57
    assert w.position_ids[56] == 22  # [SEP] continues from the largest hint position
    assert list(w.anchor_tokens) == [13, 21, 39, 47]
    mask = w.attention_mask()
    assert (mask == mask.T).all()
    group1, group2 = range(1, 30), range(30, 56)
    assert not mask[np.ix_(list(group1), list(group2))].any()
    assert mask[np.ix_(list(group1), list(group1))][:12].all()  # the prefix sees its own types
    assert not mask[13:21, 21:30].any() and not mask[39:47, 47:56].any()  # sibling type segments
    assert mask[56:].all() and mask[:, 56:].all() and mask[0].all()
    pos, ref_mask = reference_positions_and_mask(tok, w.input_ids)
    assert list(w.position_ids) == pos and (mask == ref_mask).all()


def test_many_types_split_the_hint_and_repeat_the_prefix(tok):
    types = {f"类型{i:03d}": None for i in range(50)}  # 5 tokens each, +1 for [TYPE]
    assert tok.count("类型007") == 6
    hints = build_hints([((), types)], tok.count)
    # budget: 2 + 1 ([PREFIX]) + 6k ≤ 256 → 42 types in the first hint
    assert [len(h.anchors) for h in hints] == [42, 8]
    assert [h.split for h in hints] == [0, 1]
    assert hints[1].text.startswith("[PREFIX][TYPE]类型042")
    assert [a.type for h in hints for a in h.anchors] == sorted(types)
    ws = windows_for(tok, [((), types)], NER_TEXT)
    assert len(ws) == 2 and all(len(w.hint.text) for w in ws)
    assert ws[0].nh == 2 + 1 + 42 * 6 and ws[0].nh <= HINT_MAX_LEN
    second = ws[1]
    assert list(second.position_ids[:16]) == [0, 1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6, 7, 2, 3]
    for w in ws:
        pos, ref_mask = reference_positions_and_mask(tok, w.input_ids)
        assert list(w.position_ids) == pos and (w.attention_mask() == ref_mask).all()


def test_multi_group_multi_split_prompt_matches_the_reference_algorithm(tok):
    children = {f"关系{i:02d}(人物)": None for i in range(12)}
    spans = ["北大西洋议会", "西班牙", "巴塞罗那", "春季会议", "闭幕", "大西洋"]
    groups = [((item("组织机构", s, NER_TEXT),), children) for s in spans]
    ws = windows_for(tok, groups, NER_TEXT * 30, level=1)
    hints = {w.hint.split for w in ws}
    assert len(hints) >= 2 and max(w.index for w in ws) >= 1  # several hints and several windows
    # a split in the middle of a group repeats its prefix
    prefixes = [a.key for w in ws for a in w.hint.anchors]
    assert len({(w.hint.split, a.key, a.type) for w in ws for a in w.hint.anchors}) == len(spans) * 12
    assert len(prefixes) > len(spans) * 12
    for w in ws:
        assert w.hint.text.startswith("[PREFIX]组织机构: ")
        pos, ref_mask = reference_positions_and_mask(tok, w.input_ids)
        mask = w.attention_mask()
        assert list(w.position_ids) == pos and (mask == ref_mask).all() and (mask == mask.T).all()
        # type segments of one group never see each other
        seg = np.asarray(w.segments)
        grp = np.asarray(w.groups)
        for a, b in [(i, j) for i in range(len(w)) for j in range(len(w)) if i < j][::97]:
            if grp[a] and grp[a] == grp[b] and seg[a] and seg[b] and seg[a] != seg[b]:
                assert mask[a, b] == 0


def test_windows_equal_the_fast_tokenizers_overflow(tok):
    text = ("北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。" * 40) + "abc 123 完"
    ws = windows_for(tok, [((), NER_SCHEMA)], text)
    ref = tok._tok(ws[0].hint.text, text, truncation="only_second", max_length=512, stride=32,
                   return_overflowing_tokens=True, return_offsets_mapping=True)
    assert len(ws) == len(ref["input_ids"]) >= 3
    for w, ids, offs, types in zip(ws, ref["input_ids"], ref["offset_mapping"], ref["token_type_ids"], strict=True):
        assert list(w.input_ids) == ids
        assert w.nh == types.index(1)
        assert list(w.text_offsets) == [tuple(o) for o in offs[w.nh:-1]]
        assert len(w) <= 512
    for a, b in zip(ws, ws[1:], strict=False):
        assert a.token_range[1] - b.token_range[0] == 32  # 32-token overlap
    assert ws[-1].token_range[1] == len(tok.encode(text)[0])


def test_classification_reads_one_window_and_flags_truncation(tok):
    short = windows_for(tok, [((), {"正向": None})], "[CLASSIFY]" + NER_TEXT, stride=0, first_only=True)
    assert len(short) == 1 and not short[0].truncated
    assert tok.convert_ids_to_tokens([short[0].input_ids[short[0].nh]]) == ["[CLASSIFY]"]
    long = windows_for(tok, [((), {"正向": None})], "[CLASSIFY]" + NER_TEXT * 40, stride=0, first_only=True)
    assert len(long) == 1 and long[0].truncated and len(long[0]) == 512


@pytest.mark.parametrize(
    ("n", "cap", "stride", "want"),
    [
        (0, 10, 2, [(0, 0)]),
        (10, 10, 2, [(0, 10)]),
        (11, 10, 2, [(0, 10), (8, 11)]),
        (26, 10, 2, [(0, 10), (8, 18), (16, 26)]),
        (27, 10, 2, [(0, 10), (8, 18), (16, 26), (24, 27)]),
        (25, 10, 0, [(0, 10), (10, 20), (20, 25)]),
    ],
)
def test_window_ranges(n, cap, stride, want):
    assert window_ranges(n, cap, stride) == want


def test_long_prefix_or_type_is_skipped(tok):
    long_span = "北" * 130
    groups = [((Item("组织机构", long_span, 0, 130, 0.9),), {"创始人(人物)": None}),
              ((Item("组织机构", "西班牙", 0, 3, 0.9),), {"创始人(人物)": None, "长" * 130: None})]
    hints = build_hints(groups, tok.count)
    assert [(prefix_string(a.key), a.type) for h in hints for a in h.anchors] == [("组织机构: 西班牙", "创始人(人物)")]


def test_prompt_tokens_get_ids_right_after_the_base_vocabulary(tmp_path):
    from app.models.checkpoint import load_tokenizer
    from app.models.uninlu.schema import ADDED_TOKENS

    vocab = rex_vocab()
    write_rex_tokenizer(tmp_path, vocab)
    fresh = PromptTokenizer(load_tokenizer(tmp_path), len(vocab))
    V = len(vocab)
    assert (fresh.prefix_id, fresh.type_id, fresh.classify_id, fresh.multi_classify_id) == (V, V + 1, V + 2, V + 3)
    ids, offsets = fresh.encode("[PREFIX]人[TYPE]物[CLASSIFY][MULTICLASSIFY]")
    assert ids == [V, vocab.index("人"), V + 1, vocab.index("物"), V + 2, V + 3]
    assert offsets == [(0, 8), (8, 9), (9, 15), (15, 16), (16, 26), (26, 41)]
    # a tokenizer export that already carries the four tokens is used as it is, not extended again
    carried = load_tokenizer(tmp_path)
    carried.add_special_tokens({"additional_special_tokens": list(ADDED_TOKENS)})
    again = PromptTokenizer(carried, V)
    assert again.prefix_id == V and len(carried) == V + 4
    # a vocabulary whose length disagrees with the model's gives the tokens the wrong ids: refused
    from app.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="expected"):
        PromptTokenizer(load_tokenizer(tmp_path), V - 1)
