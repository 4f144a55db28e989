"""Turning uploaded or piped bytes into a list of texts, one per line, with messages people can act on.

Shared by the CLI and the UI's file upload, so both name the same line numbers for the same problem.
"""

from __future__ import annotations

from app.errors import InputError

_SHOW = 10  # line numbers named in one message; more would drown the message


def _numbers(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:_SHOW])
    return shown + (f" … ({len(lines)} in all)" if len(lines) > _SHOW else "")


def parse_lines(data: bytes, *, skip_blank: bool = False, source: str = "input") -> list[str]:
    """One text per line (UTF-8, optional BOM, \\n or \\r\\n). Blank lines are an error naming them, or
    skipped with `skip_blank`; invalid UTF-8 is an error naming the lines."""
    return [text for _, text in numbered_lines(data, skip_blank=skip_blank, source=source)]


def numbered_lines(data: bytes, *, skip_blank: bool = False, source: str = "input") -> list[tuple[int, str]]:
    """parse_lines with each text's line number (1-based, blank lines counted), for messages about one line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the final newline ends the last line; it does not start a blank one
    bad: list[int] = []
    texts: list[tuple[int, str]] = []
    blank: list[int] = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            bad.append(number)
            continue
        if not line.strip():
            blank.append(number)
            continue
        texts.append((number, line))
    if bad:
        raise InputError(
            f"{source}: 第 {_numbers(bad)} 行不是有效的 UTF-8 (line {_numbers(bad)} is not valid UTF-8); "
            "save the file as UTF-8 and try again"
        )
    if blank and not skip_blank:
        raise InputError(
            f"{source}: 第 {_numbers(blank)} 行为空 (line {_numbers(blank)} is blank); "
            "delete or fill those lines, or pass --skip-blank to skip them"
        )
    if not texts:
        raise InputError(f"{source}: no text given (输入为空); give one text per line")
    return texts
