"""The status tab's reading of the launcher's files (formats in launcher/README.md) and of the error
list, without a server: the functions are plain."""

from __future__ import annotations

import json

import pytest

from app.errors import InputError
from app.web.ui.status import launcher_view, read_events
from app.web.ui.uploads import parse_csv


def write_launcher_files(state_dir, events, status=None):
    lines = [json.dumps(e, ensure_ascii=False) for e in events]
    (state_dir / "launcher-events.jsonl").write_text("\n".join(lines) + "\n{\"ts\": \"torn", encoding="utf-8")
    if status is not None:
        (state_dir / "launcher-status.json").write_text(json.dumps(status), encoding="utf-8")


def test_restart_history_newest_first_without_noise_or_torn_lines(tmp_path):
    events = [
        {"ts": "2025-05-01T08:00:00.000Z", "event": "launcher_started", "level": "info", "launcher_pid": 1,
         "options": {"x": 1}, "command": ["python"]},
        {"ts": "2025-05-01T08:00:01.000Z", "event": "start", "level": "info", "attempt": 1, "pid": 10},
        {"ts": "2025-05-01T08:00:05.000Z", "event": "sample_under_threshold", "level": "info", "pid": 10},
        {"ts": "2025-05-01T08:10:00.000Z", "event": "restart", "level": "warning", "reason": "memory",
         "pid": 10, "used_mib": 70000.0, "threshold_mib": 65536.0},
        {"ts": "2025-05-01T08:10:03.000Z", "event": "exit", "level": "info", "pid": 10, "exit_code": 0},
        {"ts": "2025-05-01T08:10:05.000Z", "event": "start", "level": "info", "attempt": 2, "pid": 11},
    ]
    status = {"state": "running", "attempt": 2, "restart_count": 1, "restarts_in_window": 1,
              "last_restart": {"ts": "2025-05-01T08:10:00.000Z", "reason": "memory"}}
    write_launcher_files(tmp_path, events, status)
    text, table = launcher_view(tmp_path)
    assert "**running**" in text and "restarts 1" in text and "memory" in text
    assert list(table["事件 event"]) == ["start", "exit", "restart", "start", "launcher_started"]
    restart = table.iloc[2]
    assert restart["级别 level"] == "warning"
    assert "reason=memory" in restart["详情 detail"] and "used_mib=70000.0" in restart["详情 detail"]
    assert "options" not in table.iloc[4]["详情 detail"]  # the launcher's option dump stays out


def test_no_launcher_says_so(tmp_path):
    text, table = launcher_view(tmp_path)
    assert "no launcher state" in text and table.empty
    assert read_events(tmp_path / "missing.jsonl") == []


def test_csv_takes_the_named_column_and_names_blank_rows():
    data = 'id,文本,note\n1,"第一, 带逗号",a\n2,,b\n3,第三,c\n'.encode()
    assert parse_csv(data, "x.csv", skip_blank=True) == ["第一, 带逗号", "第三"]
    with pytest.raises(InputError) as e:
        parse_csv(data, "x.csv")
    assert "x.csv: 第 3 行为空" in e.value.message and "column 2" in e.value.message
    assert parse_csv("甲\n乙\n".encode(), "y.csv") == ["甲", "乙"]  # no header: the first column
