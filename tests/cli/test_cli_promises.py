"""README "The shell CLI": "a failed inference exits 1. Never a traceback."

The failure is a real one: an embedding checkpoint whose vocab.txt has one token more than its embedding table
(a tokenizer from another revision of the model). It loads, texts without that token are embedded, and a text
with it fails inside the forward pass (IndexError in the embedding lookup).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRA_TOKEN = "鑫"  # not in the tiny vocabulary


def run_app(args: list[str], stdin: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"PYTHONPATH": str(ROOT), "WENMO_STATE_DIR": str(tmp / "state"), "WENMO_MODEL_DIR": str(tmp / "cache")})
    return subprocess.run([sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=180)


@pytest.fixture(scope="module")
def mismatched_gte(tiny_dirs, tmp_path_factory) -> Path:
    gte = tmp_path_factory.mktemp("mismatched") / "gte"
    shutil.copytree(tiny_dirs["embed"], gte)
    vocab = (gte / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert EXTRA_TOKEN not in vocab
    assert len(vocab) == json.loads((gte / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    (gte / "vocab.txt").write_text("\n".join([*vocab, EXTRA_TOKEN]) + "\n", encoding="utf-8")
    return gte


def test_the_mismatched_checkpoint_serves_texts_it_can_read(mismatched_gte, tmp_path):
    r = run_app(["embed", "--model", str(mismatched_gte)], "今天天气很好\n明天\n", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [json.loads(line)["index"] for line in r.stdout.splitlines()] == [0, 1]


@pytest.mark.parametrize("command", ["embed", "similarity"])
def test_a_failed_inference_exits_1_with_a_message_and_no_traceback(mismatched_gte, tiny_dirs, tmp_path, command):
    if command == "embed":
        args = ["embed", "--model", str(mismatched_gte)]
    else:
        args = ["similarity", "--embed-model", str(mismatched_gte), "--cross-model", str(tiny_dirs["cross"]),
                "--source", "今天天气很好"]
    r = run_app(args, f"今天天气不错\n今天{EXTRA_TOKEN}\n", tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stdout == ""  # no partial result that looks complete
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr[-3000:]
