"""README.md's shell examples, run as written, so the README cannot drift from the code (issue 13).

Every fenced block in the sections below is `bash` (or `python`, `ini`, `http`: shown, not run; an untyped block
cannot hide a shell example). The Quick start's two commands are run by tests/deploy/test_deploy.py. Each command in
a bash block runs through the installed `wenmo` (the virtualenv's bin/ first on PATH) in a folder holding the files
the examples name (texts.txt, candidates.txt, requests.jsonl; train.jsonl and eval.jsonl for tuning). The model
ids they name are served from a model cache
that holds the tiny checkpoints under those ids, as a finished download leaves it (no hub here); `--demo` commands
use the same tiny models. The curl examples run against a real `--demo` server with the user the README shows
(alice:secret), http://HOST:7860 pointing at it, and curl failing on an HTTP error.

A command that cannot run here says why, visibly, in the README: `# not run by tests: <why>` at the end of its line,
or as the first line of its block for the whole block. Every other command must exit 0, and where the README
shows output below a command (comment lines), the real output must have the shape shown: every JSON key, and every
`wenmo_…` metric name, the comment names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_harness import WenmoServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECTIONS = ("The shell CLI", "Universal NLU", "The web app", "Deploying", "The launcher", "Measuring",
            "Tuning to your data")
NOT_SHELL = ("python", "ini", "http")  # blocks of these languages are shown, not run
NOT_RUN = "not run by tests:"
CURL_USER = "alice:secret"
# What the examples read: a few texts, candidates for similarity, NLU requests (one with a blank line between).
FILES = {
    "texts.txt": "今天天气很好\n明天会下雨\n北京天安门\n",
    "candidates.txt": "今天天气不错\n我喜欢看电影\n",
    "requests.jsonl": '{"text": "谷口清太郎在日本积极筹资", "schema": {"人物": null}}\n\n{"text": "这部电影很好看", '
                      '"schema": {"正向情感": null, "负向情感": null}, "task": "classify"}\n',
    "train.jsonl": "".join(f'{{"text_a": "{a}", "text_b": "{b}", "label": {y}}}\n' for a, b, y in (
        ("怎么退货", "如何申请退货", 1), ("怎么退货", "今天天气很好", 0), ("密码忘了", "如何重置密码", 1),
        ("密码忘了", "北京天安门", 0), ("运费多少", "邮费怎么算", 1), ("运费多少", "我喜欢看电影", 0))),
    "eval.jsonl": "".join(f'{{"text_a": "{a}", "text_b": "{b}", "label": {y}}}\n' for a, b, y in (
        ("怎样退款", "退款流程", 1), ("怎样退款", "明天会下雨", 0), ("发票怎么开", "如何开发票", 1),
        ("发票怎么开", "上海", 0))),
}


@dataclass
class Example:
    section: str
    line: int  # of the command's first line in README.md
    command: str
    shown: list[str] = field(default_factory=list)  # comment lines right below it: output or explanation
    skipped: str = ""  # the reason, when marked `not run by tests`
    block: int = 0  # line of its fenced block's opening: a block reads as one session, top to bottom


def sections(text: str) -> dict[str, list[tuple[int, str]]]:
    """`## ` title → its (line number, line) pairs, subsections included."""
    out: dict[str, list[tuple[int, str]]] = {}
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            current = line[3:]
            out[current] = []
        elif current is not None:
            out[current].append((number, line))
    return out


def fenced_blocks(lines: list[tuple[int, str]]) -> list[tuple[str, list[tuple[int, str]]]]:
    blocks, language, body = [], None, []
    for number, line in lines:
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), [(number, line)]
            else:
                blocks.append((language, body))
                language = None
        elif language is not None:
            body.append((number, line))
    return blocks


def examples(readme: str) -> list[Example]:
    found = []
    for title, lines in sections(readme).items():
        if not title.startswith(SECTIONS):
            continue
        for language, body in fenced_blocks(lines):
            assert language == "bash" or language in NOT_SHELL, f"README {title!r}, line {body[0][0]}: a ``` block " \
                f"without bash or one of {NOT_SHELL}: mark shell examples ```bash so that this test runs them"
            (opening, _), body = body[0], body[1:]
            if language != "bash":
                continue
            whole_block = ""
            if body and body[0][1].startswith("#") and NOT_RUN in body[0][1]:
                whole_block = body[0][1].split(NOT_RUN, 1)[1].strip()
                body = body[1:]
            pending, last = "", None
            for number, line in body:
                if not line.strip():
                    continue
                if line.startswith("#") and not pending:
                    if last is not None:  # below a command: its output; above every command: about the block
                        last.shown.append(line)
                    continue
                if not pending:
                    start = number
                pending += line
                if line.endswith("\\"):  # continues on the next line
                    pending = pending[:-1] + " "
                    continue
                reason = pending.split(NOT_RUN, 1)[1].strip() if NOT_RUN in pending else whole_block
                last = Example(title, start, pending, skipped=reason, block=opening)
                found.append(last)
                pending = ""
    return found


README_EXAMPLES = examples((ROOT / "README.md").read_text(encoding="utf-8"))
CLI = [e for e in README_EXAMPLES if not e.skipped and not e.command.startswith("curl ")]
CURL = [e for e in README_EXAMPLES if not e.skipped and e.command.startswith("curl ")]


def shown_names(example: Example) -> set[str]:
    """The JSON keys and metric names the README shows below a command."""
    text = "\n".join(example.shown)
    return set(re.findall(r'"([A-Za-z_]+)"\s*:', text)) | set(re.findall(r"\bwenmo_[a-z_]+", text))


def unchecked(missing: set[str], stdout: str) -> set[str]:
    """The shown names that cannot be checked: those of list elements when the output's lists are empty (the tiny
    random-weight NLU model finds no spans, so `"output": []` has no "span" to show)."""
    return missing if re.search(r"\[\s*\]", stdout) else set()


def output_names(stdout: str) -> set[str]:
    """Every key in the JSON (or JSON lines) on stdout, and every wenmo_… name (Prometheus text)."""
    names = set(re.findall(r"\bwenmo_[a-z_]+", stdout))

    def walk(value: object) -> None:
        if isinstance(value, dict):
            names.update(value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for line in stdout.splitlines():
        try:
            walk(json.loads(line))
        except ValueError:
            pass
    return names


# ---- the README's side: what is run, what is not -----------------------------------------------------------
def test_the_readme_sections_hold_examples_and_every_skip_says_why():
    titles = {e.section for e in README_EXAMPLES}
    assert all(any(t.startswith(s) for t in titles) for s in SECTIONS), titles
    assert len(CLI) >= 15 and len(CURL) >= 5, (len(CLI), len(CURL))
    for e in README_EXAMPLES:
        assert e.skipped or NOT_RUN not in e.command
        if NOT_RUN in e.command or e.skipped:
            assert len(e.skipped) > 10, f"README line {e.line}: `# {NOT_RUN}` needs a reason"
    # The installed command, not the module: `python -m app` is spelled once, in prose, as its equivalent.
    for e in README_EXAMPLES:
        assert "python -m app" not in e.command, f"README line {e.line}: use `wenmo` in examples"


def test_the_parser_sees_continuations_output_and_marks():
    text = "\n".join([
        "## The shell CLI", "```bash", "wenmo a \\", "    --b c   # why", "# {\"x\": 1}",
        "wenmo d  # not run by tests: needs a GPU here", "```",
        "## Measuring", "```bash", "# not run by tests: takes hours on full models", "wenmo e",
        "```", "## Other", "```", "not a shell example", "```",
    ])
    got = examples(text)
    assert [(e.line, e.command, e.shown, e.skipped, e.block) for e in got] == [
        (3, "wenmo a      --b c   # why", ['# {"x": 1}'], "", 2),
        (6, "wenmo d  # not run by tests: needs a GPU here", [], "needs a GPU here", 2),
        (11, "wenmo e", [], "takes hours on full models", 9),
    ]
    assert shown_names(got[0]) == {"x"}
    with pytest.raises(AssertionError, match="without bash"):
        examples("## The web app\n```\nwenmo serve\n```\n")


# ---- running them -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from app.composition import DEMO_DIRS, demo_models
    from app.config import DEFAULT_CROSS_MODEL, DEFAULT_EMBED_MODEL, DEFAULT_NLU_MODEL
    from app.engine.loading import COMPLETE_MARKER

    root = tmp_path_factory.mktemp("readme")
    state = root / "state"
    demo = demo_models(state)  # built once, here: the --demo commands and the server find them
    cache = root / "models"
    for role, model_id in (("embed", DEFAULT_EMBED_MODEL), ("cross", DEFAULT_CROSS_MODEL), ("nlu", DEFAULT_NLU_MODEL)):
        shutil.copytree(demo[role], cache / model_id)
        (cache / model_id / COMPLETE_MARKER).touch()  # a finished download
    assert set(DEMO_DIRS) == {"embed", "cross", "nlu"}
    work = root / "work"
    work.mkdir()
    for name, content in FILES.items():
        (work / name).write_text(content, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_") and k != "PYTHONPATH"}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "WENMO_STATE_DIR": str(state),
                "WENMO_MODEL_DIR": str(cache), "WENMO_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"})
    assert shutil.which("wenmo", path=env["PATH"]) == str(BIN / "wenmo"), \
        f"{BIN / 'wenmo'} is missing: tests/run.sh installs the project (pip install -e .)"
    # The curl examples' server loads its models while the CLI examples run (the slowest part of this file).
    server = WenmoServer(root / "server", auth=CURL_USER, template=state)
    try:
        yield {"root": root, "state": state, "work": work, "env": env, "server": server}
    finally:
        server.close()


def run(command: str, workspace: dict, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], input="readme-example-password\n",
                          capture_output=True, text=True, cwd=workspace["work"], env=env or workspace["env"],
                          timeout=180)


RAN: dict[int, subprocess.CompletedProcess[str]] = {}  # README line → its run, each command run once


def run_in_reading_order(example: Example, workspace: dict) -> subprocess.CompletedProcess[str]:
    """The example's run, after the commands above it in its block (pytest-randomly shuffles the tests; a reader
    does not: `wenmo evaluate --model tuned-embed` needs the `wenmo tune` above it to have run)."""
    for e in CLI:
        if e.block == example.block and e.line <= example.line and e.line not in RAN:
            RAN[e.line] = run(e.command, workspace)
    return RAN[example.line]


@pytest.mark.parametrize("example", CLI, ids=[f"README:{e.line}" for e in CLI])
def test_a_cli_example_runs_as_written(workspace, example):
    r = run_in_reading_order(example, workspace)
    assert r.returncode == 0, f"README line {example.line}: {example.command}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    missing = shown_names(example) - output_names(r.stdout)
    missing -= unchecked(missing - {"task", "truncated", "output"}, r.stdout)
    assert not missing, f"README line {example.line} shows {sorted(missing)}, not in the output:\n{r.stdout[:2000]}"


@pytest.fixture(scope="module")
def server(workspace) -> WenmoServer:
    return workspace["server"].wait_ready()


@pytest.mark.parametrize("example", CURL, ids=[f"README:{e.line}" for e in CURL])
def test_a_curl_example_answers_as_shown(workspace, server, example):
    # curl itself, failing on an HTTP error status (the README's commands leave that out to stay short)
    shim = Path(workspace["root"]) / "curl-shim"
    shim.mkdir(exist_ok=True)
    real = shutil.which("curl")
    assert real, "curl is not installed"
    (shim / "curl").write_text(f'#!/bin/sh\nexec {real} --fail-with-body -sS "$@"\n')
    (shim / "curl").chmod(0o755)
    env = dict(workspace["env"], PATH=f"{shim}{os.pathsep}{workspace['env']['PATH']}")
    command = example.command.replace("http://HOST:7860", server.url)
    assert server.url in command, f"README line {example.line}: the example should call http://HOST:7860"
    r = run(command, workspace, env)
    assert r.returncode == 0, f"README line {example.line}: {command}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    missing = shown_names(example) - output_names(r.stdout)
    missing -= unchecked(missing - {"task", "truncated", "output"}, r.stdout)
    assert not missing, f"README line {example.line} shows {sorted(missing)}, not in the answer:\n{r.stdout[:2000]}"
