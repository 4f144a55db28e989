"""`wenmo embed --shard I/N` and `wenmo join-shards` (README "Sharded batch vectors"): the shards joined are the
unsharded run's output, and the join refuses any set of shards that is not one run over one input, whole.

The many runs go through app.cli.main in this process (argv to files, the command's whole path; the tiny model
loads once per run in ~50 ms instead of a new interpreter's seconds); the installed command runs end to end in
test_installed_command_shards_and_joins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.shards import Shard

ROOT = Path(__file__).resolve().parents[2]
# 10 lines, 2 of them blank: not a multiple of 3 or 7, and fewer than 12 (empty shards). A text with a comma and a
# quote, so CSV quoting is part of what must survive the join.
LINES = ["北京天安门", "我喜欢这部电影", "", "上海", '他说："好，走吧"', "广州", "深圳", "", "杭州西湖", "成都"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shards")


@pytest.fixture(autouse=True)
def cli_env(workdir, monkeypatch):
    for key in [k for k in os.environ if k.startswith("WENMO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("WENMO_STATE_DIR", str(workdir / "state"))  # the demo models, built once for the module
    monkeypatch.setenv("WENMO_LOG_LEVEL", "WARNING")


@pytest.fixture(scope="module")
def source(workdir) -> Path:
    path = workdir / "texts.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def embed(source: Path, output: Path, fmt: str, shard: str | None = None, *extra: str) -> None:
    argv = ["embed", "--demo", "--skip-blank", "--input", str(source), "--output", str(output), "--format", fmt]
    assert main([*argv, *(["--shard", shard] if shard else []), *extra]) == 0


def shard_files(output: Path, count: int) -> list[Path]:
    return [Shard(i, count).path(output) for i in range(count)]


def run_shards(source: Path, output: Path, fmt: str, count: int) -> list[Path]:
    for i in reversed(range(count)):  # any order: each shard is independent of the others
        embed(source, output, fmt, f"{i}/{count}")
    return shard_files(output, count)


def join(output: Path, files: list[Path], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["join-shards", "--output", str(output), *map(str, files)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("count", [1, 3, 7, 12])
def test_npy_shards_join_to_the_unsharded_vectors(source, workdir, count, capsys):
    whole = workdir / "whole.npy"
    embed(source, whole, "npy")
    out = workdir / f"n{count}" / "vectors.npy"
    out.parent.mkdir()
    files = run_shards(source, out, "npy", count)
    assert [f.name for f in files][-1] == f"vectors.shard-{count - 1:05d}-of-{count:05d}.npy"
    assert all(np.load(f).shape[1:] == (32,) for f in files)  # an empty shard is (0, 32), not a bare (0,)
    if count == 12:
        assert sum(np.load(f).shape[0] == 0 for f in files) >= 2  # 10 lines: shards with no line at all
    joined = workdir / f"joined{count}.npy"
    code, err = join(joined, list(reversed(files)), capsys)  # argument order is not input order
    assert code == 0, err
    # Equal, not close: on the CPU the tiny model gives a text the same float32 vector whatever else is in its batch
    # (padding is masked), so equality also pins that the shards hold the right texts in the right order. (On a GPU
    # kernels are chosen by shape and the last bits may differ: README "Sharded batch vectors".)
    assert np.array_equal(np.load(joined), np.load(whole))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("count", [3, 12])
def test_text_shards_join_to_the_unsharded_file_byte_for_byte(source, workdir, fmt, count, capsys):
    whole = workdir / f"whole.{fmt}"
    embed(source, whole, fmt)
    out = workdir / f"{fmt}{count}" / f"vectors.{fmt}"
    out.parent.mkdir()
    files = run_shards(source, out, fmt, count)
    joined = workdir / f"joined{count}.{fmt}"
    code, err = join(joined, files, capsys)
    assert code == 0, err
    assert joined.read_bytes() == whole.read_bytes()  # row indices, texts, header once, vectors: all of it


def test_the_record_says_which_lines_a_shard_holds(source, workdir):
    out = workdir / "rec" / "v.npy"
    out.parent.mkdir()
    embed(source, out, "npy", "1/3")
    record = json.loads(Path(f"{Shard(1, 3).path(out)}.json").read_text(encoding="utf-8"))
    # 10 lines, shard 1 of 3: 0-based lines [3, 6) = lines 4..6, after 2 rows (line 3 is blank)
    assert {k: record[k] for k in ("shard", "of", "input_lines", "first_line", "lines", "first_index", "rows",
                                   "skipped_lines", "dimension", "normalized")} == {
        "shard": 1, "of": 3, "input_lines": 10, "first_line": 4, "lines": 3, "first_index": 2, "rows": 3,
        "skipped_lines": [], "dimension": 32, "normalized": True}
    embed(source, out, "npy", "2/3")
    record = json.loads(Path(f"{Shard(2, 3).path(out)}.json").read_text(encoding="utf-8"))
    assert (record["first_line"], record["lines"], record["rows"], record["skipped_lines"]) == (7, 4, 3, [8])
    assert np.load(Shard(2, 3).path(out)).shape == (3, 32)


def test_blank_lines_are_split_by_line_number_before_skipping(workdir, capsys):
    """The same texts with and without blank lines between them split differently: by input line, not by text."""
    path = workdir / "blanks.txt"
    path.write_text("甲\n\n\n\n乙\n丙\n", encoding="utf-8")  # 6 lines; shard 0 of 2 is lines 1..3: one text
    out = workdir / "blanks" / "v.npy"
    out.parent.mkdir()
    files = run_shards(path, out, "npy", 2)
    assert [np.load(f).shape[0] for f in files] == [1, 2]


# ---- the join refuses what is not one run over one input, whole ------------------------------------------
@pytest.fixture(scope="module")
def runs(source, workdir) -> dict[str, list[Path]]:
    other = workdir / "other.txt"
    other.write_text("一\n二\n三\n四\n", encoding="utf-8")
    made = {}
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse cli_env is not set up yet
        mp.setenv("WENMO_STATE_DIR", str(workdir / "state"))
        mp.setenv("WENMO_LOG_LEVEL", "WARNING")
        for name, src, count in (("a3", source, 3), ("a2", source, 2), ("b3", other, 3)):
            out = workdir / "runs" / name / "v.npy"
            out.parent.mkdir(parents=True)
            made[name] = run_shards(src, out, "npy", count)
    return made


def test_join_refuses_a_missing_shard(runs, workdir, capsys):
    code, err = join(workdir / "j.npy", runs["a3"][:1] + runs["a3"][2:], capsys)
    assert code == 2 and err == ("error: shard(s) 1 of 3 missing; run `wenmo embed --shard I/3` for them (or give "
                                 "their files) and join again")
    assert not (workdir / "j.npy").exists()


def test_join_refuses_shards_of_another_count(runs, workdir, capsys):
    code, err = join(workdir / "j.npy", runs["a3"][:2] + runs["a2"][1:], capsys)
    assert code == 2 and "come from a different shard count" in err and err.count("\n") == 0


def test_join_refuses_shards_of_another_input(runs, workdir, capsys):
    code, err = join(workdir / "j.npy", runs["a3"][:2] + runs["b3"][2:], capsys)
    assert code == 2 and "come from a different input file" in err


def test_join_refuses_a_shard_given_twice(runs, workdir, capsys):
    copy = workdir / "copy.shard-00001-of-00003.npy"
    copy.write_bytes(runs["a3"][1].read_bytes())
    Path(f"{copy}.json").write_bytes(Path(f"{runs['a3'][1]}.json").read_bytes())
    code, err = join(workdir / "j.npy", [*runs["a3"], copy], capsys)
    assert code == 2 and err.startswith("error: shard 1 of 3 is given twice")


@pytest.mark.parametrize(("first_line", "what"), [(4, "overlaps the shard before it"),
                                                  (8, "leaves a gap after the shard before")])
def test_join_refuses_overlapping_or_gapped_ranges(runs, workdir, capsys, first_line, what):
    """A record that does not continue where the one before ended (edited, or written by another split)."""
    folder = workdir / f"edited{first_line}"
    folder.mkdir()
    files = []
    for f in runs["a3"]:
        copy = folder / f.name
        copy.write_bytes(f.read_bytes())
        record = json.loads(Path(f"{f}.json").read_text(encoding="utf-8"))
        if record["shard"] == 2:
            record["first_line"] = first_line  # the real one is 7
        Path(f"{copy}.json").write_text(json.dumps(record), encoding="utf-8")
        files.append(copy)
    code, err = join(workdir / "j.npy", files, capsys)
    assert code == 2 and f"starts at input line {first_line} but line 7 comes next: it {what}" in err


def test_join_refuses_a_shard_without_its_record_or_with_other_rows(runs, workdir, capsys):
    lone = workdir / "lone.shard-00000-of-00001.npy"
    np.save(lone, np.zeros((2, 32), dtype=np.float32))
    code, err = join(workdir / "j.npy", [lone], capsys)
    assert code == 2 and "no shard record lone.shard-00000-of-00001.npy.json beside it" in err
    short = workdir / "short"
    short.mkdir()
    files = [short / f.name for f in runs["a3"]]
    for f, copy in zip(runs["a3"], files, strict=True):
        Path(f"{copy}.json").write_bytes(Path(f"{f}.json").read_bytes())
        np.save(copy, np.load(f)[:1])  # a truncated shard: one row where the record says three
    code, err = join(workdir / "j.npy", files, capsys)
    assert code == 2 and "v.shard-00000-of-00003.npy holds 1 row(s) but its record says 2" in err


def test_join_takes_records_for_their_data_files_once(runs, workdir, capsys):
    """`join-shards vectors.shard-*` catches the records too; each names its data file, taken once."""
    files = [p for f in runs["a3"] for p in (f, Path(f"{f}.json"))]
    code, err = join(workdir / "both.npy", files, capsys)
    assert code == 0, err
    assert np.load(workdir / "both.npy").shape == (8, 32)


def test_join_refuses_an_output_named_for_another_format(runs, workdir, capsys):
    code, err = join(workdir / "j.csv", runs["a3"], capsys)
    assert code == 2 and err == "error: --output " + str(workdir / "j.csv") + ": the shards are npy, the join " \
        "writes npy; name it ….npy"


# ---- the installed command, and the flag's bad values --------------------------------------------------------
def wenmo(args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_STATE_DIR": str(workdir / "state"), "WENMO_LOG_LEVEL": "WARNING"})
    return subprocess.run([str(Path(sys.executable).parent / "wenmo"), *args], capture_output=True, text=True,
                          cwd=workdir, env=env, timeout=120)


@pytest.mark.parametrize(("spec", "says"), [
    ("3/3", "--shard 3/3: I must be below N (the last of 3 shards is 2/3)"),
    ("x", "--shard 'x': not of the form I/N"),
    ("0/0", "--shard 0/0: N must be at least 1"),
    ("-1/3", "--shard '-1/3': not of the form I/N"),
])
def test_bad_shard_is_one_line_naming_the_flag(source, workdir, spec, says):
    done = wenmo(["embed", "--demo", "--input", str(source), "--output", "v.npy", "--format", "npy",
                  f"--shard={spec}"], workdir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {says}") and "give --shard I/N with 0 <= I < N" in done.stderr


def test_shard_refuses_stdout(source, workdir):
    done = wenmo(["embed", "--demo", "--input", str(source), "--shard", "0/2"], workdir)
    assert done.returncode == 2 and done.stderr == ("error: --shard 0/2: each shard writes its own file; give "
                                                    "--output FILE (shard 0 then writes "
                                                    "FILE.shard-00000-of-00002.jsonl)\n")


def test_installed_command_shards_and_joins(source, workdir):
    folder = workdir / "installed"
    folder.mkdir()
    for i in range(2):
        done = wenmo(["embed", "--demo", "--skip-blank", "--input", str(source), "--output",
                      str(folder / "vectors.npy"), "--format", "npy", "--shard", f"{i}/2"], workdir)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "vectors.shard-00000-of-00002.npy", "vectors.shard-00000-of-00002.npy.json",
        "vectors.shard-00001-of-00002.npy", "vectors.shard-00001-of-00002.npy.json"]
    done = wenmo(["join-shards", "--output", str(folder / "all.npy"), *sorted(map(str, folder.iterdir()))], workdir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"output": str(folder / "all.npy"), "format": "npy", "shards": 2, "rows": 8,
                                       "input_lines": 10}
    assert np.load(folder / "all.npy").shape == (8, 32)


def test_every_shard_checks_the_whole_input(workdir, capsys):
    """A blank line in shard 2's range fails shard 0 too, with the unsharded run's message: a job of N shards fails
    as one run would, not with N-1 shards written and one missing."""
    path = workdir / "blank-late.txt"
    path.write_text("甲\n乙\n丙\n\n丁\n", encoding="utf-8")
    argv = ["embed", "--demo", "--input", str(path), "--output", str(workdir / "late.npy"), "--format", "npy"]
    capsys.readouterr()
    assert main(argv) == 2
    whole = capsys.readouterr().err
    assert main([*argv, "--shard", "0/3"]) == 2
    assert capsys.readouterr().err == whole and "line 4 is blank" in whole
    assert not Shard(0, 3).path(workdir / "late.npy").exists()
