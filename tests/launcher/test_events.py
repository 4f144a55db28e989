"""Event lines and the bounded ``launcher-events.jsonl``; the atomically replaced status file."""

from __future__ import annotations

import io
import json
from pathlib import Path

from launcher.events import (
    EVENTS_FILE,
    MEMORY_FILE,
    STATUS_FILE,
    EventLog,
    MemoryLog,
    StatusFile,
    utc_timestamp,
)


def test_event_is_one_json_line_on_the_stream_and_in_the_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = EventLog(tmp_path / "state", max_lines=10, stream=stream, wall_clock=lambda: 1_700_000_000.25)
    record = log.emit("restart", "warning", reason="memory", used_mib=1500.0, source="nvml-process")
    expected = {
        "ts": "2023-11-14T22:13:20.250Z",
        "event": "restart",
        "level": "warning",
        "reason": "memory",
        "used_mib": 1500.0,
        "source": "nvml-process",
    }
    assert record == expected
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [expected]
    assert [json.loads(line) for line in (tmp_path / "state" / EVENTS_FILE).read_text().splitlines()] == [
        expected
    ]


def test_file_keeps_only_the_newest_lines(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_lines=5, stream=io.StringIO())
    for i in range(12):
        log.emit("tick", n=i)
    lines = (tmp_path / EVENTS_FILE).read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [7, 8, 9, 10, 11]
    assert sorted(p.name for p in tmp_path.iterdir()) == [EVENTS_FILE]  # no temporary file left behind


def test_existing_file_is_continued_and_trimmed_on_start(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    path.write_text("".join(json.dumps({"event": "old", "n": i}) + "\n" for i in range(8)))
    log = EventLog(tmp_path, max_lines=5, stream=io.StringIO())
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [3, 4, 5, 6, 7]
    log.emit("new", n=8)
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [4, 5, 6, 7, 8]


def test_status_file_is_replaced_whole(tmp_path: Path) -> None:
    status = StatusFile(tmp_path)
    status.write({"state": "running", "child_pid": 12})
    status.write({"state": "draining", "child_pid": 12})
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == {"state": "draining", "child_pid": 12}
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATUS_FILE]


def test_utc_timestamp_format() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"


def memory_numbers(path: Path) -> list[int]:
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


def test_memory_log_stays_within_its_bound_dropping_the_oldest_quarter(tmp_path: Path) -> None:
    log = MemoryLog(tmp_path, max_lines=8)
    path = tmp_path / MEMORY_FILE
    seen = []
    for i in range(30):
        log.append({"n": i, "used_mib": 1.5, "threshold_mib": 100.0})
        seen.append(memory_numbers(path))
    assert max(len(lines) for lines in seen) == 8
    assert all(lines == list(range(lines[0], lines[-1] + 1)) for lines in seen)  # newest, in order
    assert [lines[-1] for lines in seen] == list(range(30))  # every sample reached the file
    # Full at 8 lines: the 9th sample leaves the newest 6 (three quarters), then appends resume.
    assert seen[7] == list(range(8)) and seen[8] == list(range(3, 9))
    assert seen[9] == list(range(3, 10))
    assert sorted(p.name for p in tmp_path.iterdir()) == [MEMORY_FILE]  # no temporary file left behind


def test_memory_log_continues_a_previous_file_and_mends_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / MEMORY_FILE
    path.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(3)) + '{"n": 3, "used_m')
    log = MemoryLog(tmp_path, max_lines=100)
    log.append({"n": 4})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines[:3]] == [0, 1, 2]
    assert lines[3] == '{"n": 3, "used_m'  # still torn, but on its own line: readers skip it
    assert json.loads(lines[4]) == {"n": 4}
    log.append({"n": 5})
    assert len(path.read_text().splitlines()) == 6
