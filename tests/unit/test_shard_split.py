"""The shard split and names (app/shards.py), pure: no model, no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import InputError
from app.shards import Shard, count_lines, parse_shard, select


@pytest.mark.parametrize("total", [0, 1, 2, 7, 10, 100, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 12, 150])
def test_shards_cover_every_line_once_in_order(total, count):
    ranges = [Shard(i, count).line_range(total) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous: no gap, no overlap
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1  # balanced to within one line


def test_line_range_is_the_documented_formula():
    assert [Shard(i, 3).line_range(10) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [Shard(i, 4).line_range(2) for i in range(4)] == [(0, 0), (0, 1), (1, 1), (1, 2)]


@pytest.mark.parametrize(("output", "name"), [
    ("vectors.npy", "vectors.shard-00003-of-00008.npy"),
    ("out/v.jsonl", "v.shard-00003-of-00008.jsonl"),
    ("vectors", "vectors.shard-00003-of-00008"),
])
def test_shard_file_names(output, name):
    path = Shard(3, 8).path(output)
    assert path.name == name and path.parent == Path(output).parent


@pytest.mark.parametrize(("spec", "shard"), [("0/1", Shard(0, 1)), ("7/8", Shard(7, 8)), (" 2 / 5 ", Shard(2, 5)),
                                             ("99998/99999", Shard(99998, 99999))])
def test_parse_shard(spec, shard):
    assert parse_shard(spec) == shard


@pytest.mark.parametrize(("spec", "says"), [("3/3", "I must be below N"), ("0/0", "N must be at least 1"),
                                            ("x", "not of the form I/N"), ("1/2/3", "not of the form I/N"),
                                            ("", "not of the form I/N"), ("0/100000", "at most 99999 shards")])
def test_parse_shard_refuses(spec, says):
    with pytest.raises(InputError, match=says) as e:
        parse_shard(spec)
    assert e.value.message.startswith("--shard ")


@pytest.mark.parametrize(("data", "lines"), [(b"", 0), (b"a", 1), (b"a\n", 1), (b"a\n\n", 2), (b"a\nb", 2),
                                             (b"\xef\xbb\xbfa\r\nb\r\n", 2), (b"\n", 1)])
def test_count_lines_numbers_as_textinput_does(data, lines):
    assert count_lines(data) == lines


def test_select_keeps_row_indices_and_names_skipped_lines():
    numbered = [(1, "a"), (2, "b"), (5, "c"), (6, "d")]  # lines 3 and 4 blank
    assert select(numbered, Shard(0, 2), 6) == (1, ["a", "b"], 0, [3])
    assert select(numbered, Shard(1, 2), 6) == (4, ["c", "d"], 2, [4])
    assert select(numbered, Shard(0, 9), 6) == (1, [], 0, [])  # no line at all


def test_a_record_on_the_command_line_stands_for_its_data_file_once(tmp_path):
    from app.shards import data_paths

    names = ["v.shard-00000-of-00002.npy", "v.shard-00000-of-00002.npy.json", "bare.shard-00001-of-00002",
             "bare.shard-00001-of-00002.json", "other.json"]
    for name in names:
        (tmp_path / name).write_text("x")
    got = data_paths([str(tmp_path / n) for n in names])
    assert [p.name for p in got] == ["v.shard-00000-of-00002.npy", "bare.shard-00001-of-00002", "other.json"]
    with pytest.raises(InputError, match="missing.npy: no such file"):
        data_paths([str(tmp_path / "missing.npy")])
