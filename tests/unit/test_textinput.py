import pytest

from app.errors import InputError
from app.textinput import parse_lines


def test_lines_bom_crlf_and_final_newline():
    assert parse_lines("\ufeff你好\r\n世界\n".encode()) == ["你好", "世界"]


def test_blank_lines_are_named():
    with pytest.raises(InputError) as e:
        parse_lines(b"a\n\nb\n  \nc\n", source="f.txt")
    assert "第 2, 4 行为空" in e.value.message and "line 2, 4" in e.value.message
    assert "--skip-blank" in e.value.message


def test_skip_blank():
    assert parse_lines(b"a\n\nb\n", skip_blank=True) == ["a", "b"]


def test_invalid_utf8_is_named():
    with pytest.raises(InputError) as e:
        parse_lines("好\n".encode() + b"\xff\xfe\n" + "坏\n".encode("gbk"))
    assert "line 2, 3 is not valid UTF-8" in e.value.message


@pytest.mark.parametrize("data", [b"", b"\n\n", b"   \n"])
def test_empty_input(data):
    with pytest.raises(InputError):
        parse_lines(data, skip_blank=True)


def test_many_bad_lines_are_summarised():
    with pytest.raises(InputError) as e:
        parse_lines(b"x\n" + b"\n" * 30 + b"y\n")
    assert "(30 in all)" in e.value.message
