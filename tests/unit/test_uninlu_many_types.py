"""RexUniNLU schemas of many types (up to 512) on planted logits: the type hint is split into several prompts
of at most 256 tokens, as the reference does, and the walk gives what the planted cells say — in the
reference's order and with its tie-breaking. No torch.

The reference (thyecust/rexuninlu_chinese, rex/Trainer/trainer.py `prompt_loop`) runs a level's hint splits
one after the other and appends each window's finds, so extraction results come split by split; for
classification it keeps, per split, the best label (`sorted(…, reverse=True)[0]`: a stable sort, so the first
of equal sums), then the best of the splits the same way. `reference_classify` below restates that rule from
the reference's code, independently of the pipeline, and the planted walk must agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from app.errors import BudgetExceededError, InputError
from app.models.uninlu import pipeline
from app.models.uninlu.fixture import rex_vocab, write_rex_tokenizer
from app.models.uninlu.prompt import HINT_MAX_LEN, PromptTokenizer, prefix_string
from app.models.uninlu.schema import MAX_TYPES, parse_schema

TEXT = "北大西洋议会春季会议26日在西班牙巴塞罗那闭幕。"
ON, OFF = 5.0, -5.0
ACTIONS = ["查询", "取消", "修改", "预订", "投诉", "咨询", "办理", "开通"]
OBJECTS = ["订单", "账户", "密码", "快递", "发票", "会员", "套餐", "退款", "积分", "地址"]
INTENTS = [a + o for a in ACTIONS for o in OBJECTS]  # 80 four-character intent labels


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("rex-tokenizer")
    write_rex_tokenizer(root, rex_vocab())
    return PromptTokenizer.from_dir(root)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@dataclass
class Planter:
    """A forward function: every cell OFF except the planted ones; records every window it runs.

    `spans`: (prefix, type, (start, end)) → span, head and tail cells ON wherever a window holds the span.
    `labels`: (prefix, type) → (head, tail) logits of the marker cells L[m, t], L[t, m]; `marker` gives the
    marker's own cell L[m, m] per window (it is one cell, shared by every label of the window)."""

    spans: set = field(default_factory=set)
    labels: dict = field(default_factory=dict)
    marker: object = None
    windows: list = field(default_factory=list)

    def __call__(self, windows, reduce):
        out = []
        for w in windows:
            self.windows.append(w)
            logits = np.full((len(w), len(w)), OFF, dtype=np.float32)
            m = w.nh
            if self.marker is not None:
                logits[m, m] = self.marker(w)
            for k, anchor in enumerate(w.hint.anchors):
                t = w.anchor_tokens[k]
                prefix = prefix_string(anchor.key)
                if (prefix, anchor.type) in self.labels:
                    logits[m, t], logits[t, m] = self.labels[(prefix, anchor.type)]
                for p, typ, (a, b) in self.spans:
                    if (p, typ) != (prefix, anchor.type):
                        continue
                    starts = [i for i, o in enumerate(w.text_offsets) if o[0] == a]
                    ends = [i for i, o in enumerate(w.text_offsets) if o[1] == b]
                    if starts and ends:
                        s, e = starts[0] + w.nh, ends[0] + w.nh
                        logits[s, e] = logits[s, t] = logits[t, e] = ON
            out.append(reduce(w, logits))
        return out


def as_output(paths):
    return [[(it.type, it.span, (it.start, it.end)) for it in path] for path in paths]


def splits_of(windows, level=0):
    """The anchors' types of each hint split of a level, in split order."""
    hints = {w.hint.split: w.hint for w in windows if w.level == level}
    assert sorted(hints) == list(range(len(hints)))
    return [[a.type for a in hints[i].anchors] for i in range(len(hints))]


# -- classification: 80 labels --------------------------------------------------------------------------------

def reference_classify(splits, span_cell, cells, multi):
    """The reference's label choice for a flat schema, from its code (prompt_loop, infer_cls_info_from_prediction
    and prediction_step), on one window per split: `splits` lists each split's labels in prompt order,
    `span_cell[i]` is split i's marker cell, `cells[label]` the label's (head, tail) logits."""

    def confidence(i, label):
        return round(float(sigmoid([span_cell[i], *cells[label]]).mean()), 4)

    def walk(blank):
        pred_info_list, candidates = [], []
        for i, labels in enumerate(splits):
            pred_info = {}  # insertion-ordered, as the reference's defaultdict
            for label in labels:
                if blank or (span_cell[i] > 0 and all(c > 0 for c in cells[label])):
                    pred_info.setdefault(label, []).append([confidence(i, label)])
            if multi:
                pred_info_list += [(label, found[0]) for label, found in pred_info.items()]
            elif len(pred_info) == 1:
                label = next(iter(pred_info))
                candidates.append((label, pred_info[label][0]))
            elif len(pred_info) > 1:
                prob_sum = {k: [sum(col) / len(col) for col in zip(*v, strict=True)] for k, v in pred_info.items()}
                candidates.append(sorted(prob_sum.items(), key=lambda x: sum(x[1]), reverse=True)[0])
        if not multi and candidates:
            pred_info_list.append(sorted(candidates, key=lambda x: sum(x[1]), reverse=True)[0])
        return pred_info_list

    found = walk(False) or walk(True)
    means = [sum(c) / len(c) for _, c in found]
    keep = [i for i, p in enumerate(means) if p > 0.9] if multi else []
    keep = keep or [means.index(max(means))]
    return [(found[i][0], found[i][1][0]) for i in keep]


def classify(tok, labels, cells, span_cell, multi, budget=None):
    planter = Planter(labels={("", k): v for k, v in cells.items()}, marker=lambda w: span_cell[w.hint.split])
    result = pipeline.classify(TEXT, parse_schema({k: None for k in labels}), tok, planter, multi=multi,
                               budget=budget)
    return result, planter


def test_eighty_labels_split_into_two_hints_by_the_reference_rule(tok):
    cells = {label: (OFF, OFF) for label in INTENTS}
    result, planter = classify(tok, INTENTS, cells, [ON, ON], multi=False)
    # Each label is [TYPE] + 4 tokens = 5; a hint starts at 2 ([CLS], [SEP]) + 1 ([PREFIX], empty prefix at
    # level 0): 3 + 5·50 = 253 ≤ 256 < 258, so 50 labels in the first hint and 30 in the second, code-point sorted.
    assert all(tok.count(label) == 5 for label in INTENTS)
    assert splits_of(planter.windows) == [sorted(INTENTS)[:50], sorted(INTENTS)[50:]]
    assert [w.nh for w in planter.windows] == [253, 153]
    assert all(w.nh == w.hint.tokens <= HINT_MAX_LEN for w in planter.windows)
    assert result.forwards == 2 and not result.truncated


def test_the_best_label_of_a_later_split_wins(tok):
    cells = {label: (OFF, OFF) for label in INTENTS}
    first, late = sorted(INTENTS)[3], sorted(INTENTS)[70]
    cells[first] = (2.0, 2.0)
    cells[late] = (4.0, 4.0)
    result, _ = classify(tok, INTENTS, cells, [ON, ON], multi=False)
    assert as_output(result.paths) == [[(late, "[CLASSIFY]", (0, 10))]]
    assert result.paths[0][0].score == round(float(sigmoid([ON, 4.0, 4.0]).mean()), 4)


def test_equal_labels_in_two_splits_the_earlier_split_wins(tok):
    cells = {label: (OFF, OFF) for label in INTENTS}
    early, late = sorted(INTENTS)[49], sorted(INTENTS)[50]  # the last of split 0, the first of split 1
    cells[early] = cells[late] = (3.0, 3.0)
    result, _ = classify(tok, INTENTS, cells, [ON, ON], multi=False)
    assert [p[0].type for p in result.paths] == [early]
    # and within one split, the earlier in prompt order
    cells[late] = (OFF, OFF)
    cells[sorted(INTENTS)[10]] = (3.0, 3.0)
    result, _ = classify(tok, INTENTS, cells, [ON, ON], multi=False)
    assert [p[0].type for p in result.paths] == [sorted(INTENTS)[10]]


def test_multi_label_keeps_confident_labels_of_every_split_in_prompt_order(tok):
    cells = {label: (OFF, OFF) for label in INTENTS}
    picked = [sorted(INTENTS)[i] for i in (75, 2, 51, 40)]
    for label in picked:
        cells[label] = (ON, ON)
    cells[sorted(INTENTS)[60]] = (0.5, 0.5)  # found, but under 0.9
    result, planter = classify(tok, INTENTS, cells, [ON, ON], multi=True)
    assert [p[0].type for p in result.paths] == [sorted(INTENTS)[i] for i in (2, 40, 51, 75)]
    assert tok.convert_ids_to_tokens([planter.windows[0].input_ids[planter.windows[0].nh]]) == ["[MULTICLASSIFY]"]


def test_nothing_found_falls_back_across_splits_without_running_them_again(tok):
    cells = {label: (-3.0, -3.0) for label in INTENTS}
    cells[sorted(INTENTS)[66]] = (-1.0, 2.0)
    result, planter = classify(tok, INTENTS, cells, [-1.0, -1.0], multi=False)
    assert [p[0].type for p in result.paths] == [sorted(INTENTS)[66]]
    assert result.forwards == 2 and len(planter.windows) == 2


@pytest.mark.parametrize("multi", [False, True])
def test_random_label_cells_agree_with_the_reference_rule(tok, multi):
    """Cells drawn from a few values, so that equal confidences (ties) are common within and across splits."""
    rng = np.random.default_rng(12 + multi)
    splits = [sorted(INTENTS)[:50], sorted(INTENTS)[50:]]
    values = np.array([-2.0, 1.0, 2.0, 4.0, 6.0])
    for _ in range(60):
        cells = {label: tuple(rng.choice(values, 2)) for label in INTENTS}
        span_cell = list(rng.choice([-1.0, 3.0, 6.0], 2))
        result, _ = classify(tok, INTENTS, cells, span_cell, multi=multi)
        want = reference_classify(splits, span_cell, cells, multi)
        assert [(p[0].type, p[0].score) for p in result.paths] == want


# -- extraction: 200 types --------------------------------------------------------------------------------------

TYPES_200 = [f"实体{i:03d}" for i in range(200)]  # 实, 体, 0, ##0, ##0: [TYPE] + 5 tokens = 6 each


def test_two_hundred_types_split_into_five_hints_and_come_back_split_by_split(tok):
    # 3 + 6·42 = 255 ≤ 256: 42 types per hint → splits of 42, 42, 42, 42, 32 types.
    spans = {("", "实体150", (0, 6)), ("", "实体003", (14, 17)), ("", "实体003", (0, 2)), ("", "实体199", (17, 21)),
             ("", "实体050", (14, 17)), ("", "实体045", (14, 17)), ("", "实体041", (17, 21)), ("", "实体042", (0, 6))}
    planter = Planter(spans=spans)
    result = pipeline.extract(TEXT, parse_schema({t: None for t in reversed(TYPES_200)}), tok, planter)
    # The reference's order: split 0's finds (spans row-major, then anchors), then split 1's, …
    assert as_output(result.paths) == [
        [("实体003", "北大", (0, 2))],
        [("实体003", "西班牙", (14, 17))],
        [("实体041", "巴塞罗那", (17, 21))],
        [("实体042", "北大西洋议会", (0, 6))],
        [("实体045", "西班牙", (14, 17))],
        [("实体050", "西班牙", (14, 17))],
        [("实体150", "北大西洋议会", (0, 6))],
        [("实体199", "巴塞罗那", (17, 21))],
    ]
    assert splits_of(planter.windows) == [TYPES_200[i:i + 42] for i in range(0, 200, 42)]
    assert all(w.nh == w.hint.tokens <= HINT_MAX_LEN for w in planter.windows)
    assert result.forwards == 5


def test_every_window_of_an_earlier_split_comes_before_a_later_split(tok):
    text = "在" * 300 + "西班牙" + "在" * 300 + "巴塞罗那" + "在" * 100
    spain, barcelona = text.index("西班牙"), text.index("巴塞罗那")
    spans = {("", "实体100", (spain, spain + 3)), ("", "实体010", (barcelona, barcelona + 4))}
    planter = Planter(spans=spans)
    result = pipeline.extract(text, parse_schema({t: None for t in TYPES_200}), tok, planter)
    found_in = {(w.hint.split, w.index) for w in planter.windows
                for o in w.text_offsets if o[0] in (spain, barcelona)}
    assert (0, 2) in found_in and (2, 1) in found_in  # 实体010: split 0, window 2; 实体100: split 2, window 1
    assert as_output(result.paths) == [[("实体010", "巴塞罗那", (barcelona, barcelona + 4))],
                                       [("实体100", "西班牙", (spain, spain + 3))]]


def test_a_nested_group_of_199_relations_repeats_its_prefix_in_every_split(tok):
    relations = [f"关系{i:03d}(人物)" for i in range(199)]  # [TYPE] + 9 tokens = 10 each
    schema = parse_schema({"组织机构": dict.fromkeys(relations)})
    north, spain = "组织机构: 北大西洋议会", "组织机构: 西班牙"  # prefixes of 11 + 1 and 8 + 1 tokens
    spans = {("", "组织机构", (0, 6)), ("", "组织机构", (14, 17)),
             (north, "关系190(人物)", (17, 21)), (spain, "关系003(人物)", (0, 2)), (north, "关系198(人物)", (14, 17))}
    planter = Planter(spans=spans)
    result = pipeline.extract(TEXT, schema, tok, planter)
    level1 = splits_of(planter.windows, level=1)
    # 北大西洋议会: 2 + 12 + 10·24 = 254, so 24 relations per hint: 8 full hints and 7 in the ninth (84 tokens);
    # 西班牙 joins the ninth (84 + 9 + 10·16 = 253) and fills eight more (2 + 9 + 10·24 = 251): 17 hints.
    assert [len(s) for s in level1] == [24] * 8 + [7 + 16] + [24] * 7 + [15]
    texts = [w.hint.text for w in planter.windows if w.level == 1]
    assert all(t.startswith(f"[PREFIX]{north}[TYPE]") for t in texts[:9])
    assert all(t.startswith(f"[PREFIX]{spain}[TYPE]") for t in texts[9:])
    assert f"[TYPE]关系198(人物)[PREFIX]{spain}[TYPE]关系000(人物)" in texts[8]
    org_n, org_s = ("组织机构", "北大西洋议会", (0, 6)), ("组织机构", "西班牙", (14, 17))
    assert as_output(result.paths) == [
        [org_n, ("关系190(人物)", "巴塞罗那", (17, 21))],  # split 7
        [org_s, ("关系003(人物)", "北大", (0, 2))],  # split 8, span (0, 2) first
        [org_n, ("关系198(人物)", "西班牙", (14, 17))],  # split 8, span (14, 17)
    ]
    assert all(w.nh == w.hint.tokens <= HINT_MAX_LEN for w in planter.windows)
    assert result.forwards == 1 + 17


# -- the cap and the budget -----------------------------------------------------------------------------------

TYPES_512 = [f"实体{i:03d}" for i in range(MAX_TYPES)]


def test_a_schema_of_513_types_is_refused_with_the_limit_and_what_to_do():
    assert MAX_TYPES == 512
    assert len(parse_schema(dict.fromkeys(TYPES_512))) == 512
    with pytest.raises(InputError) as err:
        parse_schema({"根": dict.fromkeys(TYPES_512)})
    assert err.value.message == (
        'schema["根"]["实体511"]: the schema has more than 512 types in total (all levels together); at most 512 '
        "are allowed — split it into several requests of at most 512 types each")


def test_512_types_run_in_thirteen_hints_and_the_budget_boundary_is_exact(tok):
    text = TEXT * 15  # 360 tokens: 2 windows beside a full hint (room for 256), 1 beside the last (460)
    assert len(tok.encode(text)[0]) == 360
    schema = parse_schema(dict.fromkeys(TYPES_512))
    planter = Planter(spans={("", "实体511", (14, 17))})
    result = pipeline.extract(text, schema, tok, planter)
    hints = {w.hint.text: w for w in planter.windows}
    assert len(hints) == 13  # 12 hints of 42 types, 8 in the last
    # The forward count is the fast tokenizer's own overflow count per hint (the reference's windows).
    want = sum(len(tok._tok(h, text, truncation="only_second", max_length=512, stride=32,
                            return_overflowing_tokens=True)["input_ids"]) for h in hints)
    assert result.forwards == len(planter.windows) == want == 12 * 2 + 1
    assert pipeline.level_windows([((), schema)], tok.count, len(tok.encode(text)[0]), 512) == want
    assert as_output(result.paths)[0] == [("实体511", "西班牙", (14, 17))]
    exact = pipeline.extract(text, schema, tok, Planter(), budget=pipeline.Budget(max_forwards=want))
    assert exact.forwards == want
    short = Planter()
    with pytest.raises(BudgetExceededError) as err:
        pipeline.extract(text, schema, tok, short, budget=pipeline.Budget(max_forwards=want - 1))
    assert short.windows == []  # refused before any window of the level ran
    assert f"more than {want - 1} model passes (WENMO_NLU_MAX_FORWARDS; at least {want} by schema level 1)" in (
        err.value.message)
    assert "once per hint" in err.value.message


def test_512_labels_classify_costs_one_pass_per_hint_and_the_budget_refuses_fewer(tok):
    cells = {label: (OFF, OFF) for label in TYPES_512}
    cells["实体300"] = (ON, ON)
    result, planter = classify(tok, TYPES_512, cells, [ON] * 13, multi=False)
    assert [p[0].type for p in result.paths] == ["实体300"] and result.forwards == 13
    with pytest.raises(BudgetExceededError, match="more than 12 model passes"):
        classify(tok, TYPES_512, cells, [ON] * 13, multi=False, budget=pipeline.Budget(max_forwards=12))


class Everywhere:
    """Every cell on: a span for every (start ≤ end, anchor). Counts windows per level."""

    def __init__(self):
        self.levels = []

    def __call__(self, windows, reduce):
        self.levels += [w.level for w in windows]
        return [reduce(w, np.full((len(w), len(w)), ON, dtype=np.float32)) for w in windows]


def test_a_level_past_the_forward_budget_runs_none_of_its_windows_and_builds_few_hints(tmp_path, monkeypatch):
    write_rex_tokenizer(tmp_path, rex_vocab())
    tok = PromptTokenizer.from_dir(tmp_path)
    calls = []
    encode = tok.encode
    monkeypatch.setattr(tok, "encode", lambda s: calls.append(s) or encode(s))
    monkeypatch.setattr(pipeline, "CHUNK_WINDOWS", 8)
    children = dict.fromkeys(f"子{i:03d}" for i in range(511))  # [TYPE] + 4 tokens = 5 each
    text = TEXT[:12]  # 78 spans of "A", each a prefix group of 511 children: ~11 hints each, ~860 in all
    forward = Everywhere()
    with pytest.raises(BudgetExceededError, match="more than 100 model passes.*by schema level 2"):
        pipeline.extract(text, parse_schema({"A": children}), tok, forward,
                         budget=pipeline.Budget(max_forwards=100, max_paths=10**6))
    assert forward.levels == [0]  # level 1 was refused whole, not after 96 of its windows ran
    # Counted, not built: each child name is tokenized once, plus the prefixes of the ~10 groups that fill the
    # budget; building the level would tokenize 78 prefixes and ~860 hints.
    assert len(calls) < 600
