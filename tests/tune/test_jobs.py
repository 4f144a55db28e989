"""TuneJobs for real: a short job run to the end, and a long one cancelled (tiny demo models, real children)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import task_files  # noqa: E402

from app.config import Settings  # noqa: E402
from app.errors import ConflictError  # noqa: E402
from app.tune.jobs import TuneJobs  # noqa: E402


@pytest.fixture
def jobs(tmp_path):
    jobs = TuneJobs(Settings(state_dir=str(tmp_path / "state"), log_level="WARNING"))
    yield jobs
    jobs.close()


def test_a_short_job_runs_to_done_with_its_figures(jobs, tmp_path):
    train, held_out = task_files(tmp_path / "task", train=64, held_out=32, groups=2)
    assert jobs.state()["status"] == "idle"
    job_id = jobs.start("embed", train, held_out, demo=True, options={"steps": 3, "batch_size": 8})
    state = jobs.state()
    assert state["job_id"] == job_id and state["status"] == "running" and state["role"] == "embed"
    state = jobs.wait(600)
    assert state["status"] == "done", state
    assert state["step"] == state["steps"] == 3 and len(state["losses"]) == 3 and state["zero_stage"] == 2
    assert set(state["before"]) == set(state["after"]) == {"spearman", "roc_auc"}
    out = Path(state["out"])
    assert out.parent == tmp_path / "state" / "demo-models" / "tuned" and (out / "pytorch_model.bin").exists()
    assert Path(state["report"]) == out / "tune-report.json" and state["exit_code"] == 0 and state["message"] is None


def test_a_running_job_is_the_only_one_and_a_cancel_leaves_no_checkpoint(jobs, tmp_path):
    train, held_out = task_files(tmp_path / "task", train=64, held_out=32, groups=2)
    out = tmp_path / "never"
    jobs.start("cross", train, held_out, demo=True, options={"steps": 100000, "batch_size": 8, "out": str(out)})
    with pytest.raises(ConflictError, match="a tune job is running"):
        jobs.start("embed", train, held_out, demo=True)
    deadline = time.monotonic() + 600
    while jobs.state()["step"] < 2:  # training has begun
        assert jobs.state()["status"] == "running", jobs.state()
        assert time.monotonic() < deadline, "the job never reached step 2"
        time.sleep(0.2)
    assert jobs.cancel() is True
    state = jobs.wait(120)
    assert state["status"] == "cancelled" and state["exit_code"] == 143 and state["out"] is None
    assert 2 <= state["step"] < 100000
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert jobs.cancel() is False  # nothing runs now


def test_bad_arguments_are_refused_before_a_process_starts(jobs, tmp_path):
    with pytest.raises(Exception, match="no such file"):
        jobs.start("embed", tmp_path / "none.jsonl", tmp_path / "none.jsonl", demo=True)
    with pytest.raises(Exception, match="role 'nlu'"):
        jobs.start("nlu", tmp_path, tmp_path, demo=True)
    with pytest.raises(Exception, match="unknown tune options"):
        jobs.command("embed", __file__, __file__, demo=True, options={"epoch": 2})
    assert jobs.state()["status"] == "idle"


def test_the_files_of_all_but_the_newest_jobs_are_removed_when_a_job_starts(tmp_path):
    """A server tuning for months kept every job's folder (events, log; the Tune tab's upload copies beside them)."""
    quick = tmp_path / "python"
    quick.write_text("#!/bin/sh\nexit 0\n")  # a "job" that ends at once: only its folder matters here
    quick.chmod(0o755)
    train, held_out = task_files(tmp_path / "task", train=16, held_out=8, groups=2)
    jobs = TuneJobs(Settings(state_dir=str(tmp_path / "state"), tune_keep_jobs=2), python=str(quick))
    started = []
    for _ in range(4):
        started.append(jobs.start("embed", train, held_out, demo=True))
        assert jobs.wait(30)["status"] == "failed"  # it wrote no events
        time.sleep(0.02)  # distinct modification times
    left = sorted(p.name for p in (tmp_path / "state" / "tune-jobs").iterdir())
    assert left == sorted(started[-2:])


def test_prune_keeps_the_newest_folders_and_the_one_just_made(tmp_path):
    import os

    from app.tune.jobs import prune_folders

    for i, name in enumerate(["a", "b", "c", "d"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))  # d newest
    (tmp_path / "note.txt").write_text("not a folder")
    # "a" is the oldest by its time (a clock step, an unpacked upload), but it is the new job's: it stays.
    gone = prune_folders(tmp_path, 2, keep_also=tmp_path / "a")
    assert sorted(p.name for p in gone) == ["b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d", "note.txt"]
