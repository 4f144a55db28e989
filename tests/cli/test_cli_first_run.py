"""A newcomer's first commands (issue 13): the installed `wenmo` command, a Python without the dependencies, --demo
beside a model flag, reranking in demo mode, and `nlu` mistakes reported before any model loads. Real child
processes; "before the model loads" is shown without timing: a model path that does not exist is not what fails,
and --demo builds no demo models in a fresh state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the virtualenv's bin/, where `pip install -e .` put the commands


def env_for(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_") and k != "PYTHONPATH"}
    env.update({"WENMO_STATE_DIR": str(tmp / "state"), "WENMO_MODEL_DIR": str(tmp / "cache")})
    return env


def wenmo(args: list[str], tmp: Path, stdin: str = "", log_level: str = "WARNING") -> subprocess.CompletedProcess:
    """The installed command, run from a folder outside the checkout (as a user would, after `cd ~`)."""
    command = BIN / "wenmo"
    assert command.exists(), f"{command} is missing: tests/run.sh installs the project (pip install -e .)"
    env = env_for(tmp) | {"WENMO_LOG_LEVEL": log_level}
    return subprocess.run([str(command), *args], input=stdin, capture_output=True, text=True, cwd=tmp, env=env,
                          timeout=180)


def assert_one_error_line(r: subprocess.CompletedProcess, needle: str) -> str:
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and r.stdout == "", r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last, r.stderr[-3000:]
    return last


# ---- the installed commands ----------------------------------------------------------------------------------
def test_wenmo_and_wenmo_launcher_are_installed_and_run_this_checkout(tmp_path):
    r = wenmo(["--help"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: wenmo"), r.stderr
    # The installed package is this checkout (editable): a copied .venv could point at another one.
    code = "import app, launcher; print(app.__file__); print(launcher.__file__)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env=env_for(tmp_path), timeout=60)
    assert where.stdout.split() == [str(ROOT / "app" / "__init__.py"), str(ROOT / "launcher" / "__init__.py")]
    launcher = subprocess.run([str(BIN / "wenmo-launcher"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                              env=env_for(tmp_path), timeout=60)
    assert launcher.returncode == 0 and "--threshold-ratio" in launcher.stdout, launcher.stderr


def test_the_installed_command_finds_ds_config_from_any_folder(tmp_path):
    """app/config.py finds ds_config.json beside the packages: true of the editable install, run from elsewhere."""
    r = wenmo(["plan", "--device", "cpu"], tmp_path, log_level="INFO")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ds_config={ROOT / 'ds_config.json'}" in r.stderr, r.stderr[-3000:]


# ---- a Python without the dependencies ------------------------------------------------------------------------
def bare_python() -> str:
    """The interpreter this virtualenv was made from; with -S it sees no site-packages at all, only the stdlib."""
    return getattr(sys, "_base_executable", None) or sys.executable


@pytest.mark.parametrize("argv", [["--help"], ["embed", "--demo"], ["nlu", "--text", "x", "--schema", "{}"]])
def test_a_python_without_the_dependencies_says_what_to_run(tmp_path, argv):
    r = subprocess.run([bare_python(), "-S", "-E", "-m", "app", *argv], input="北京\n", capture_output=True,
                       text=True, cwd=ROOT, env=env_for(tmp_path), timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    line = r.stderr.strip()
    assert line.startswith("error: ") and "cannot import 'numpy'" in line  # the first package app.cli needs
    assert "tests/run.sh" in line and "./deploy.sh" in line and ".venv/bin/wenmo" in line


def test_a_dependency_missing_at_model_load_gets_the_same_line(capsys):
    """torch and transformers load when a model does, after app.cli imported: the shell's renderer says the same."""
    from app.cli import report_error

    error = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert report_error(error) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "cannot import 'torch'" in err and ".venv/bin/wenmo" in err
    # A module of the checkout itself is a bug, not a missing dependency: the generic failure line, exit 1.
    assert report_error(ModuleNotFoundError("No module named 'app.nope'", name="app.nope")) == 1


# ---- --demo and the model flags -------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, flag", [
    (["similarity", "--source", "北京", "--cross-model", "/nonexistent"], "--cross-model"),
    (["similarity", "--source", "北京", "--embed-model", "/nonexistent"], "--embed-model"),
    (["embed", "--model", "/nonexistent"], "--model"),
    (["nlu", "--model", "/nonexistent", "--text", "北京", "--schema", '{"地点": null}'], "--model"),
    (["serve", "--nlu-model", "/nonexistent"], "--nlu-model"),
])
def test_demo_refuses_a_model_flag_it_would_ignore(tmp_path, argv, flag):
    r = wenmo([*argv, "--demo"], tmp_path, stdin="上海\n")
    last = assert_one_error_line(r, f"{flag} /nonexistent: --demo uses its own tiny models")
    assert "leave out" in last
    assert not (tmp_path / "state" / "demo-models").exists()  # refused before anything was built


def test_rerank_in_demo_mode_uses_the_tiny_cross_encoder(tmp_path):
    r = wenmo(["similarity", "--demo", "--rerank", "--source", "北京"], tmp_path, stdin="北京\n上海\n")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["reranked"] is True
    scores = [x["cross_score"] for x in out["results"]]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    plain = wenmo(["similarity", "--demo", "--source", "北京"], tmp_path, stdin="北京\n上海\n")
    assert json.loads(plain.stdout)["reranked"] is False


# ---- nlu: mistakes reported before the model loads ------------------------------------------------------------
def test_a_schema_typo_is_reported_before_the_model_is_looked_for(tmp_path):
    r = wenmo(["nlu", "--model", str(tmp_path / "no-such-model"), "--text", "北京", "--schema", '{"人物": nul}'],
              tmp_path)
    assert_one_error_line(r, "schema is not valid JSON: line 1, column 8")
    assert "no such directory" not in r.stderr  # column 8: the n of `nul`, counted from 1 as an editor does


@pytest.mark.parametrize("argv, needle", [
    (["--text", "   ", "--schema", '{"人物": null}'], "text is empty"),
    (["--text", "北京", "--schema", '{"人物": "x"}'], 'schema["人物"]: the value is a string'),
    (["--text", "北京", "--schema", '{"人物": null}', "--max-chars", "1"], "the limit is 1"),
    (["--text", "[CLASSIFY]北京", "--task", "extract", "--schema", '{"人物": null}'], "selects classify"),
])
def test_nlu_input_errors_come_before_the_demo_models_are_built(tmp_path, argv, needle):
    last = assert_one_error_line(wenmo(["nlu", "--demo", *argv], tmp_path), needle)
    assert "item" not in last  # one text is "text", not item 0 of a list the user never wrote
    assert not (tmp_path / "state" / "demo-models").exists()


def test_nlu_input_file_errors_name_the_files_own_line_numbers(tmp_path):
    requests = tmp_path / "requests.jsonl"
    good = json.dumps({"text": "北京", "schema": {"地点": None}}, ensure_ascii=False)
    bad = json.dumps({"text": "   ", "schema": {"地点": None}}, ensure_ascii=False)
    requests.write_text(f"{good}\n\n{good}\n{bad}\n", encoding="utf-8")  # the bad request is on line 4 (one blank)
    r = wenmo(["nlu", "--demo", "--input", str(requests)], tmp_path)
    assert_one_error_line(r, f"{requests}: line 4: text is empty")
    assert not (tmp_path / "state" / "demo-models").exists()
    requests.write_text(f"{good}\n\n{good}\n", encoding="utf-8")
    ok = wenmo(["nlu", "--demo", "--input", str(requests)], tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert [json.loads(line)["task"] for line in ok.stdout.splitlines()] == ["extract", "extract"]


# ---- exit ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["embed", "similarity"])
def test_a_command_stops_its_engine_workers_before_it_returns(tiny_dirs, tmp_path, monkeypatch, command):
    """A daemon worker left inside torch while the interpreter shut down aborted `wenmo nlu` now and then after its
    output was written (status 134, "terminate called without an active exception"; seen by
    test_readme_examples). The command now stops its workers first; in-process, so their threads can be seen."""
    import threading

    from app.cli import main

    monkeypatch.setenv("WENMO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("WENMO_LOG_LEVEL", "WARNING")
    texts = tmp_path / "texts.txt"
    texts.write_text("北京\n上海\n", encoding="utf-8")
    if command == "embed":
        argv = ["embed", "--model", str(tiny_dirs["embed"]), "--input", str(texts)]
    else:
        argv = ["similarity", "--embed-model", str(tiny_dirs["embed"]), "--cross-model", str(tiny_dirs["cross"]),
                "--source", "北京", "--input", str(texts)]
    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("wenmo-") and t.name.endswith("-worker")}

    before = workers()  # other tests' services in this process may still hold theirs
    assert main(argv) == 0
    assert [t.name for t in workers() - before] == []
