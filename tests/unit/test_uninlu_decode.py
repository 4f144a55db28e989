"""RexUniNLU decoding on planted logits (spec §8): every cell −5, the chosen cells +5. No torch.

The walk runs with a fake forward function that plants cells by meaning — "span 西班牙, anchor 地理位置 in the
group with prefix P" — in whichever window and hint holds them, so these tests pin the decoder and the level
walk without any network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from app.models.uninlu import pipeline
from app.models.uninlu.decode import decode_spans
from app.models.uninlu.fixture import rex_vocab, write_rex_tokenizer
from app.models.uninlu.prompt import Anchor, Hint, PromptTokenizer, Window, prefix_string
from app.models.uninlu.schema import parse_schema

NER_TEXT = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"
NER_SCHEMA = {"人物": None, "地理位置": None, "组织机构": None}
ON, OFF = 5.0, -5.0
SIG5 = round(float(1 / (1 + np.exp(-5.0))), 4)  # 0.9933


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("rex-tokenizer")
    write_rex_tokenizer(root, rex_vocab())
    return PromptTokenizer.from_dir(root)


@dataclass
class Plant:
    type: str
    span: tuple[int, int]  # characters [start, end) of the text the model reads
    prefix: str = ""  # prefix string of the group ("" at level 0)
    cells: tuple[str, ...] = ("span", "head", "tail")
    end_on_sep: bool = False  # put the span's end on the final [SEP]
    reversed: bool = False  # put the span cell at (e, s) instead of (s, e)


class Planter:
    """A forward function: for each window, all cells OFF except the planted ones; records every window."""

    def __init__(self, plants, label_cells=None):
        self.plants = plants
        self.label_cells = label_cells or {}  # classification: (prefix, type) → 3 logits
        self.windows = []

    def __call__(self, windows, reduce):
        out = []
        for w in windows:
            self.windows.append(w)
            logits = np.full((len(w), len(w)), OFF, dtype=np.float32)
            for k, anchor in enumerate(w.hint.anchors):
                t = w.anchor_tokens[k]
                cells = self.label_cells.get((prefix_string(anchor.key), anchor.type))
                if cells is not None:
                    m = w.nh
                    logits[m, m], logits[m, t], logits[t, m] = cells
                for p in self.plants:
                    if p.type != anchor.type or p.prefix != prefix_string(anchor.key):
                        continue
                    starts = [i for i, o in enumerate(w.text_offsets) if o[0] == p.span[0]]
                    ends = [i for i, o in enumerate(w.text_offsets) if o[1] == p.span[1]]
                    if not starts or not ends:
                        continue
                    s, e = starts[0] + w.nh, ends[0] + w.nh
                    if p.end_on_sep:
                        e = w.text_end
                    if "span" in p.cells:
                        logits[(e, s) if p.reversed else (s, e)] = ON
                    if "head" in p.cells:
                        logits[s, t] = ON
                    if "tail" in p.cells:
                        logits[t, e] = ON
            out.append(reduce(w, logits))
        return out


def run(tok, text, schema, plants, label_cells=None, task="extract"):
    forward = Planter(plants, label_cells)
    schema = parse_schema(schema)
    if task == "extract":
        result = pipeline.extract(text, schema, tok, forward)
    else:
        result = pipeline.classify(text, schema, tok, forward, multi=task == "multi_classify")
    return result, forward


def as_output(paths):
    return [[(it.type, it.span, [it.start, it.end]) for it in path] for path in paths]


def test_three_cells_give_exactly_one_item(tok):
    result, _ = run(tok, NER_TEXT, NER_SCHEMA, [Plant("地理位置", (14, 17))])
    assert as_output(result.paths) == [[("地理位置", "西班牙", [14, 17])]]
    assert result.paths[0][0].score == SIG5
    assert result.forwards == 1 and not result.truncated


@pytest.mark.parametrize("missing", ["span", "head", "tail"])
def test_removing_any_one_cell_gives_nothing(tok, missing):
    cells = tuple(c for c in ("span", "head", "tail") if c != missing)
    result, _ = run(tok, NER_TEXT, NER_SCHEMA, [Plant("地理位置", (14, 17), cells=cells)])
    assert result.paths == []


def test_start_after_end_gives_nothing(tok):
    result, _ = run(tok, NER_TEXT, NER_SCHEMA, [Plant("地理位置", (14, 17), reversed=True)])
    assert result.paths == []


def test_single_token_span(tok):
    result, _ = run(tok, NER_TEXT, NER_SCHEMA, [Plant("地理位置", (14, 15))])
    assert as_output(result.paths) == [[("地理位置", "西", [14, 15])]]


def test_a_span_ending_on_the_final_sep_is_dropped(tok):
    result, _ = run(tok, NER_TEXT, NER_SCHEMA, [Plant("地理位置", (14, 17), end_on_sep=True)])
    assert result.paths == []


def test_two_types_on_one_span_come_in_sorted_type_order(tok):
    schema = {"组织机构": None, "地理位置": None}  # given unsorted
    result, _ = run(tok, NER_TEXT, schema, [Plant("组织机构", (14, 17)), Plant("地理位置", (14, 17))])
    assert as_output(result.paths) == [[("地理位置", "西班牙", [14, 17])], [("组织机构", "西班牙", [14, 17])]]


def test_model_card_ner_example_comes_back_exactly(tok):
    plants = [Plant("组织机构", (0, 6)), Plant("地理位置", (14, 17)), Plant("地理位置", (17, 21))]
    result, _ = run(tok, NER_TEXT, NER_SCHEMA, plants)
    assert as_output(result.paths) == [
        [("组织机构", "北大西洋议会", [0, 6])],
        [("地理位置", "西班牙", [14, 17])],
        [("地理位置", "巴塞罗那", [17, 21])],
    ]


def test_a_level_one_item_becomes_the_level_two_prefix(tok):
    schema = {"组织机构": {"总部(地理位置)": None, "创始人(人物)": None}}
    plants = [Plant("组织机构", (0, 6)), Plant("总部(地理位置)", (14, 17), prefix="组织机构: 北大西洋议会")]
    result, forward = run(tok, NER_TEXT, schema, plants)
    level1 = [w for w in forward.windows if w.level == 1]
    assert [w.hint.text for w in level1] == ["[PREFIX]组织机构: 北大西洋议会[TYPE]创始人(人物)[TYPE]总部(地理位置)"]
    tokens = tok.convert_ids_to_tokens(level1[0].input_ids[: level1[0].nh])
    assert tokens[:9] == ["[CLS]", "[PREFIX]", "组", "织", "机", "构", ":", "北", "大"]
    assert as_output(result.paths) == [[("组织机构", "北大西洋议会", [0, 6]), ("总部(地理位置)", "西班牙", [14, 17])]]
    assert [it.score for it in result.paths[0]] == [SIG5, SIG5]
    assert result.forwards == 2


def test_a_non_leaf_item_alone_is_not_output(tok):
    schema = {"组织机构": {"创始人(人物)": None}, "人物": None}
    result, forward = run(tok, NER_TEXT, schema, [Plant("组织机构", (0, 6)), Plant("人物", (14, 17))])
    assert as_output(result.paths) == [[("人物", "西班牙", [14, 17])]]
    assert {w.level for w in forward.windows} == {0, 1}


def test_three_levels_and_ancestors(tok):
    schema = {"A": {"B": {"C": None}}}
    plants = [Plant("A", (0, 2)), Plant("B", (2, 4), prefix="A: 北大"), Plant("C", (4, 6), prefix="A: 北大,B: 西洋")]
    result, forward = run(tok, NER_TEXT, schema, plants)
    assert as_output(result.paths) == [[("A", "北大", [0, 2]), ("B", "西洋", [2, 4]), ("C", "议会", [4, 6])]]
    assert [w.hint.text for w in forward.windows] == [
        "[PREFIX][TYPE]A", "[PREFIX]A: 北大[TYPE]B", "[PREFIX]A: 北大,B: 西洋[TYPE]C"]


def test_prefix_groups_keep_discovery_order(tok):
    schema = {"组织机构": {"创始人(人物)": None}}
    plants = [Plant("组织机构", (17, 21)), Plant("组织机构", (0, 6)), Plant("组织机构", (14, 17))]
    _, forward = run(tok, NER_TEXT, schema, plants)
    (level1,) = [w for w in forward.windows if w.level == 1]
    # discovery order = text order of the level-0 spans, never the plant order or a shuffle
    assert level1.hint.text == ("[PREFIX]组织机构: 北大西洋议会[TYPE]创始人(人物)"
                                "[PREFIX]组织机构: 西班牙[TYPE]创始人(人物)"
                                "[PREFIX]组织机构: 巴塞罗那[TYPE]创始人(人物)")


def test_overlapping_windows_collapse_duplicates(tok):
    text = "在" * 470 + "西班牙" + "在" * 300
    at = text.index("西班牙")
    result, forward = run(tok, text, NER_SCHEMA, [Plant("地理位置", (at, at + 3))])
    holding = [w for w in forward.windows if any(o[0] == at for o in w.text_offsets)]
    assert len(forward.windows) == 2 and len(holding) == 2  # the item is in the 32-token overlap
    assert as_output(result.paths) == [[("地理位置", "西班牙", [at, at + 3])]]


def test_many_types_are_found_in_a_later_hint_split(tok):
    schema = {f"类型{i:03d}": None for i in range(50)}
    result, forward = run(tok, NER_TEXT, schema, [Plant("类型045", (14, 17)), Plant("类型001", (0, 2))])
    assert sorted({w.hint.split for w in forward.windows}) == [0, 1]
    assert as_output(result.paths) == [[("类型001", "北大", [0, 2])], [("类型045", "西班牙", [14, 17])]]


def test_offsets_are_into_the_original_text_with_spaces_and_latin(tok):
    text = "  Hello 北京 World！ 西班牙"
    at = text.index("西班牙")
    hello = text.index("Hello")
    result, _ = run(tok, text, NER_SCHEMA, [Plant("地理位置", (at, at + 3)), Plant("人物", (hello, hello + 5))])
    assert as_output(result.paths) == [[("人物", "Hello", [hello, hello + 5])], [("地理位置", "西班牙", [at, at + 3])]]
    for path in result.paths:
        assert text[path[0].start: path[0].end] == path[0].span


def test_decode_spans_reports_prompt_order_and_scores(tok):
    forward = Planter([Plant("组织机构", (0, 6)), Plant("人物", (0, 6))])
    hits = []
    pipeline.extract(NER_TEXT, parse_schema(NER_SCHEMA), tok,
                     lambda ws, reduce: forward(ws, lambda w, lg: hits.append(decode_spans(w, lg)) or []))
    (found,) = hits
    assert [(h.s, h.e, h.anchor, round(h.score, 4)) for h in found] == [(16, 21, 0, SIG5), (16, 21, 2, SIG5)]


# -- classification ------------------------------------------------------------------------------------------

SENTIMENT = {"正向情感": None, "负向情感": None}


def test_single_label_classification_picks_the_best_found_label(tok):
    cells = {("", "正向情感"): (2.0, 2.0, 2.0), ("", "负向情感"): (4.0, 4.0, 4.0)}
    result, forward = run(tok, NER_TEXT, SENTIMENT, [], cells, task="classify")
    assert as_output(result.paths) == [[("负向情感", "[CLASSIFY]", [0, 10])]]
    assert result.paths[0][0].score == round(float(1 / (1 + np.exp(-4.0))), 4)
    w = forward.windows[0]
    assert tok.convert_ids_to_tokens([w.input_ids[w.nh]]) == ["[CLASSIFY]"]
    assert result.forwards == 1 and not result.truncated


def test_a_label_needs_all_three_marker_cells(tok):
    cells = {("", "正向情感"): (2.0, 2.0, -1.0), ("", "负向情感"): (1.0, 1.0, 1.0)}
    result, _ = run(tok, NER_TEXT, SENTIMENT, [], cells, task="classify")
    assert [p[0].type for p in result.paths] == ["负向情感"]


def test_nothing_found_falls_back_to_the_best_mean_confidence(tok):
    cells = {("", "正向情感"): (-1.0, -2.0, 3.0), ("", "负向情感"): (-1.0, -3.0, -3.0)}
    result, _ = run(tok, NER_TEXT, SENTIMENT, [], cells, task="classify")
    assert [p[0].type for p in result.paths] == ["正向情感"]
    want = round(float(np.mean(1 / (1 + np.exp(-np.array([-1.0, -2.0, 3.0]))))), 4)
    assert result.paths[0][0].score == want
    assert result.forwards == 1  # the fallback reuses the first pass's window


def test_multi_label_keeps_labels_above_point_nine(tok):
    schema = {"童话": None, "历史": None, "民间故事": None}
    cells = {("", "童话"): (5.0, 5.0, 5.0), ("", "民间故事"): (4.0, 4.0, 4.0), ("", "历史"): (0.5, 0.5, 0.5)}
    result, forward = run(tok, NER_TEXT, schema, [], cells, task="multi_classify")
    assert [p[0].type for p in result.paths] == ["民间故事", "童话"]  # prompt (sorted) order
    assert tok.convert_ids_to_tokens([forward.windows[0].input_ids[forward.windows[0].nh]]) == ["[MULTICLASSIFY]"]


def test_multi_label_without_confident_labels_keeps_the_best(tok):
    schema = {"童话": None, "历史": None}
    cells = {("", "童话"): (0.5, 0.5, 0.5), ("", "历史"): (1.0, 1.0, 1.0)}
    result, _ = run(tok, NER_TEXT, schema, [], cells, task="multi_classify")
    assert [p[0].type for p in result.paths] == ["历史"]


def test_hierarchical_classification_walks_the_label_tree(tok):
    schema = {"电器-附件": {"雨刮、洗涤器故障": None, "防盗报警系统": None}, "APP系统功能": {"蓝牙钥匙故障": None}}
    cells = {("", "电器-附件"): (3.0, 3.0, 3.0), ("电器-附件: [CLASSIFY]", "雨刮、洗涤器故障"): (4.0, 4.0, 4.0),
             ("电器-附件: [CLASSIFY]", "防盗报警系统"): (1.0, 1.0, 1.0)}
    result, forward = run(tok, "雨刷刮不干净怎么办", schema, [], cells, task="classify")
    assert [[it.type for it in p] for p in result.paths] == [["电器-附件", "雨刮、洗涤器故障"]]
    assert [w.hint.text for w in forward.windows] == [
        "[PREFIX][TYPE]APP系统功能[TYPE]电器-附件",
        "[PREFIX]电器-附件: [CLASSIFY][TYPE]防盗报警系统[TYPE]雨刮、洗涤器故障",
    ]


def test_long_classification_text_is_truncated_and_flagged(tok):
    cells = {("", "正向情感"): (2.0, 2.0, 2.0)}
    result, forward = run(tok, NER_TEXT * 40, SENTIMENT, [], cells, task="classify")
    assert result.truncated and result.forwards == 1 and len(forward.windows[0]) == 512
    assert [p[0].type for p in result.paths] == ["正向情感"]


# -- decode_spans on a hand-made window: exact cell values ----------------------------------------------------

def small_window(n_text: int = 3) -> Window:
    """`[CLS] [TYPE] [SEP] t0 … t(n-1) [SEP]`: one anchor (token 1), the text from token 3."""
    nh = 3
    size = nh + n_text + 1
    anchor = Anchor(key=(), type="地理位置", children=None)
    return Window(hint=Hint(text="[TYPE]地理位置", anchors=(anchor,), split=0), level=0, index=0,
                  input_ids=tuple(range(size)), position_ids=tuple(range(size)), groups=(0,) * size,
                  segments=(0,) * size, anchor_tokens=(1,), nh=nh,
                  text_offsets=tuple((i, i + 1) for i in range(n_text)))


def planted(window: Window, span: float, head: float, tail: float, s: int = 3, e: int = 4):
    """All cells OFF except span L[s, e], head L[s, t] and tail L[t, e] for the window's anchor t."""
    t = window.anchor_tokens[0]
    logits = np.full((len(window), len(window)), OFF, dtype=np.float32)
    logits[s, e], logits[s, t], logits[t, e] = span, head, tail
    return logits


def test_span_score_is_the_mean_confidence_of_its_three_cells():
    w = small_window()
    (hit,) = decode_spans(w, planted(w, 1.0, 2.0, 3.0))
    assert (hit.s, hit.e, hit.anchor) == (3, 4, 0)
    # sigmoid(1), sigmoid(2), sigmoid(3) = 0.731059, 0.880797, 0.952574 (by hand): mean 0.854810,
    # neither the largest (0.952574) nor the smallest cell.
    assert hit.score == pytest.approx(0.854810, abs=1e-6)


@pytest.mark.parametrize("zero", ["span", "head", "tail"])
def test_a_cell_of_exactly_zero_is_off(zero):
    w = small_window()
    values = {"span": 2.0, "head": 2.0, "tail": 2.0, zero: 0.0}
    assert decode_spans(w, planted(w, **values)) == []
    # the smallest positive logit is on: the rule is `> 0`, not a threshold above zero
    values[zero] = 1e-3
    (hit,) = decode_spans(w, planted(w, **values))
    assert hit.score == pytest.approx((2 * float(1 / (1 + np.exp(-2.0))) + 0.50025) / 3, abs=1e-6)
