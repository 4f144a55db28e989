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


NOW = 1_746_090_000.0  # 2025-05-01T09:00:00Z


def iso(t: float) -> str:
    from launcher.events import utc_timestamp

    return utc_timestamp(t)


def chart_ctx(state_dir, history=None):
    from types import SimpleNamespace

    return SimpleNamespace(state_dir=state_dir, history=history)


def test_memory_chart_draws_the_launchers_samples_threshold_and_restarts(tmp_path):
    from app.web.ui.status import memory_view

    samples = [{"ts": iso(NOW - 7200), "pid": 9, "used_mib": 1.0, "threshold_mib": 500.0, "source": "rss"}]
    samples += [{"ts": iso(NOW - 1800 + 5 * i), "pid": 10, "used_mib": 300.0 + 50 * i, "threshold_mib": 500.0,
                 "total_mib": 1000.0, "source": "rss"} for i in range(6)]
    samples += [{"ts": iso(NOW - 1700 + 5 * i), "pid": 11, "used_mib": 200.0, "threshold_mib": 500.0,
                 "total_mib": 1000.0, "source": "rss"} for i in range(3)]
    lines = [json.dumps(s) for s in samples]
    (tmp_path / "launcher-memory.jsonl").write_text("\n".join(lines) + '\n{"ts": "torn', encoding="utf-8")
    write_launcher_files(tmp_path, [
        {"ts": iso(NOW - 5000), "event": "restart", "level": "warning", "reason": "unhealthy"},  # before the hour
        {"ts": iso(NOW - 1760), "event": "restart", "level": "warning", "reason": "memory", "used_mib": 550.0},
        {"ts": iso(NOW - 600), "event": "crash", "level": "warning", "exit_code": -9},
    ], {"state": "running", "child_pid": 11})
    fig, caption = memory_view(chart_ctx(tmp_path), NOW, pid=11, parent_pid=1)
    assert "sampled by the launcher (rss)" in caption and "newest **200 MiB**" in caption
    assert "restart threshold **500 MiB**" in caption and "restarts in the last hour: **2**" in caption
    (ax,) = fig.axes
    drawn = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]
    first_run = ([(NOW - 1800 + 5 * i - NOW) / 60 for i in range(6)], [300.0 + 50 * i for i in range(6)])
    second_run = ([(NOW - 1700 + 5 * i - NOW) / 60 for i in range(3)], [200.0] * 3)
    markers = [xs for xs, ys in drawn if list(ys) == [0, 1]]  # axvline: the axes' full height
    assert drawn[0] == first_run and drawn[1] == second_run  # one line per run: the restart is a gap
    assert set(drawn[2][1]) == {500.0} and len(drawn[2][0]) == 9  # the threshold, over both runs
    assert sorted(xs[0] for xs in markers) == [-1760 / 60, -10.0]
    assert [t.get_text() for t in ax.texts] == ["restart: memory", "crash: exit -9"]


def test_memory_chart_without_a_launcher_is_the_processs_own_and_has_no_threshold(tmp_path):
    from app.web.history import History
    from app.web.metrics import Metrics
    from app.web.ui.status import memory_view

    clock = [NOW - 30]
    history = History(Metrics(), memory=lambda: (321.0, "rss"), wall=lambda: clock[0])
    history.sample_memory()
    clock[0] = NOW
    history.sample_memory()
    # The launcher's files are there, but they name another app: a stale state directory is not this app.
    write_launcher_files(tmp_path, [{"ts": iso(NOW - 60), "event": "restart", "level": "warning"}],
                         {"state": "running", "child_pid": 77})
    (tmp_path / "launcher-memory.jsonl").write_text(json.dumps(
        {"ts": iso(NOW - 10), "pid": 77, "used_mib": 900.0, "threshold_mib": 950.0, "source": "rss"}) + "\n")
    fig, caption = memory_view(chart_ctx(tmp_path, history), NOW, pid=11, parent_pid=1)
    assert "no launcher is running this app" in caption and "no restart threshold" in caption
    assert "newest **321 MiB**" in caption
    (ax,) = fig.axes
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[321.0, 321.0]]
    assert not ax.texts


def test_launcher_memory_file_is_read_from_its_tail(tmp_path, monkeypatch):
    from app.web.ui import status

    path = tmp_path / "launcher-memory.jsonl"
    lines = [json.dumps({"ts": iso(NOW - 100 + i), "pid": 1, "used_mib": float(i)}) for i in range(100)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(status, "MEMORY_TAIL_BYTES", sum(len(x) + 1 for x in lines[90:]) + 5)  # 10 and a piece
    tail = status.read_memory_samples(path, since=0)
    assert [s["used_mib"] for s in tail] == [float(i) for i in range(90, 100)]
    assert [s["used_mib"] for s in status.read_memory_samples(path, since=NOW - 3)] == [97.0, 98.0, 99.0]
