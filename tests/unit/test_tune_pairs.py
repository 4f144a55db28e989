"""Reading labelled pairs: every bad row names its line (1-based); duplicates and train/held-out overlap are found."""

from __future__ import annotations

import pytest

from app.errors import InputError
from app.tune.pairs import data_warnings, overlap, read_pairs


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


GOOD = '{"text_a": "怎么退货", "text_b": "如何退货", "label": 1}\n'


@pytest.mark.parametrize("bad, line, words", [
    ('{"text_a": "a", "text_b": "b", "label": 1', 2, "not valid JSON"),
    ('{"text_a": "a", "text_b": "b"}', 2, '"label"'),
    ('{"text_a": "a", "text_b": "b", "label": 3.2}', 2, "outside [0, 1]"),
    ('{"text_a": "a", "text_b": "b", "label": "yes"}', 2, "not a number"),
    ('{"text_a": "a", "text_b": "b", "label": true}', 2, "not a number"),
    ('{"text_a": " ", "text_b": "b", "label": 0}', 2, "text_a is empty"),
    ('{"text_a": "a", "text_b": 5, "label": 0}', 2, "text_b must be a string"),
])
def test_a_bad_jsonl_row_names_its_line(tmp_path, bad, line, words):
    p = write(tmp_path, "t.jsonl", GOOD + bad + "\n" + GOOD)
    with pytest.raises(InputError) as e:
        read_pairs(p)
    assert f"line {line})" in e.value.message and words in e.value.message and str(p) in e.value.message


def test_a_blank_line_still_counts_for_the_numbers(tmp_path):
    p = write(tmp_path, "t.jsonl", GOOD + "\n\n" + '{"text_a": "a", "text_b": "b", "label": 2}\n')
    with pytest.raises(InputError, match=r"line 4\)"):
        read_pairs(p)


def test_csv_with_header_quotes_and_a_multiline_field(tmp_path):
    p = write(tmp_path, "t.csv", 'text_a,text_b,label\n"你好,世界",早上好,0.5\n"两\n行",一行,1\n坏,行\n')
    with pytest.raises(InputError) as e:
        read_pairs(p)
    assert "line 5)" in e.value.message and "2 fields, expected 3" in e.value.message  # the record after the 2-line one
    p.write_text('text_a,text_b,label\n"你好,世界",早上好,0.5\n"两\n行",一行,1\n', encoding="utf-8")
    f = read_pairs(p)
    assert [(x.line, x.text_a, x.label) for x in f.pairs] == [(2, "你好,世界", 0.5), (3, "两\n行", 1.0)]
    assert not f.binary


def test_tsv_and_binary_labels(tmp_path):
    f = read_pairs(write(tmp_path, "t.tsv", "怎么退货\t如何退货\t1\n天气\t股票\t0\n"))
    assert [(p.text_a, p.text_b, p.label) for p in f.pairs] == [("怎么退货", "如何退货", 1.0), ("天气", "股票", 0.0)]
    assert f.binary


def test_unknown_extension_empty_file_and_bad_utf8(tmp_path):
    with pytest.raises(InputError, match="unknown file type .xlsx"):
        read_pairs(write(tmp_path, "t.xlsx", "x"))
    with pytest.raises(InputError, match="no pairs"):
        read_pairs(write(tmp_path, "e.jsonl", "\n"))
    p = tmp_path / "b.csv"
    p.write_bytes(b"a,b,1\n" + b"\xff\xfe,x,0\n")
    with pytest.raises(InputError, match=r"line 2\).*UTF-8"):
        read_pairs(p)
    with pytest.raises(InputError, match="cannot read"):
        read_pairs(tmp_path / "missing.jsonl")


def test_duplicates_in_either_order_and_overlap_are_reported(tmp_path):
    train = read_pairs(write(tmp_path, "train.tsv", "a\tb\t1\nc\td\t0\nb\ta\t1\ne\tf\t1\n"))
    held = read_pairs(write(tmp_path, "eval.tsv", "x\ty\t0\nd\tc\t0\nx\ty\t0\n"))
    assert train.duplicates == [(3, 1)] and held.duplicates == [(3, 1)]
    assert overlap(train, held) == [(2, 2)]
    warnings = data_warnings(train, held)
    assert len(warnings) == 3
    assert "1 duplicate pairs (line 3 repeats line 1)" in warnings[0]
    assert f"1 held-out pairs also occur in {train.path} (line 2 = {train.path} line 2)" in warnings[2]

