"""Long CLI work (embed, similarity, nlu --input) draws a progress bar with rate and ETA on stderr when stderr is a
terminal, and writes nothing extra when it is not; stdout is the same either way. Real child processes, a real
pseudo-terminal for stderr (stdout goes to a file, as in `… > out.jsonl`)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINES = 40
TEXTS = [f"第{i}行：北京天安门{'上海' * (i % 5)}" for i in range(LINES)]
NLU_LINES = 12


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    from app.models.fixtures import build_all

    root = tmp_path_factory.mktemp("progress")
    models = build_all(root / "models")
    texts = root / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    nlu = root / "nlu.jsonl"
    schema = {"人物": None, "地理位置": None}
    nlu.write_text("".join(json.dumps({"text": t, "schema": schema}, ensure_ascii=False) + "\n"
                           for t in TEXTS[:NLU_LINES]), encoding="utf-8")
    return {**models, "texts": texts, "nlu_input": nlu, "root": root}


def commands(w: dict[str, Path]) -> dict[str, list[str]]:
    return {
        "embed": ["embed", "--model", str(w["embed"]), "--input", str(w["texts"])],
        "similarity": ["similarity", "--embed-model", str(w["embed"]), "--cross-model", str(w["cross"]),
                       "--source", "北京", "--input", str(w["texts"])],
        "nlu": ["nlu", "--model", str(w["nlu"]), "--input", str(w["nlu_input"])],
    }


# total work items: texts; for similarity the source and every candidate embedded, then every candidate scored
TOTALS = {"embed": LINES, "similarity": 1 + 2 * LINES, "nlu": NLU_LINES}


def env_for(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "WENMO_STATE_DIR": str(tmp / "state"),
                "WENMO_MODEL_DIR": str(tmp / "cache")})
    return env


def run_piped(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          cwd=ROOT, env=env_for(tmp), timeout=180)


def run_on_terminal(args: list[str], tmp: Path) -> tuple[int, bytes, str]:
    """(exit status, stdout, what the terminal showed): stderr is a pseudo-terminal 120 columns wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out_path = tmp / "stdout"
    with out_path.open("wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "app", *args], stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=slave, cwd=ROOT, env=env_for(tmp))
    os.close(slave)
    shown = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        status = child.wait(timeout=180)
    return status, out_path.read_bytes(), shown.decode("utf-8", "replace")


def check_stdout(name: str, stdout: bytes) -> None:
    rows = [json.loads(line) for line in stdout.decode("utf-8").splitlines()]
    if name == "embed":
        assert [r["text"] for r in rows] == TEXTS and all(len(r["vector"]) == 32 for r in rows)
    elif name == "similarity":
        assert len(rows) == 1 and sorted(h["text"] for h in rows[0]["results"]) == sorted(TEXTS)
        assert rows[0]["reranked"] is True
    else:
        assert len(rows) == NLU_LINES and all(r["task"] == "extract" for r in rows)


@pytest.mark.parametrize("name", ["embed", "similarity", "nlu"])
def test_progress_bar_on_a_terminal_and_silence_in_a_pipe(work, tmp_path, name):
    args = commands(work)[name]

    piped = run_piped(args, tmp_path)
    assert piped.returncode == 0, piped.stderr.decode()[-3000:]
    assert piped.stderr == b""  # no bar, no carriage returns in a log file
    check_stdout(name, piped.stdout)

    status, stdout, shown = run_on_terminal(args, tmp_path)
    assert status == 0, shown[-3000:]
    total = TOTALS[name]
    # The finished bar: all items, elapsed<remaining (the ETA), and the rate in texts per second.
    done = re.search(rf"{name}: 100%\|[^|]*\| {total}/{total} \[\d\d:\d\d<00:00, +\d+(\.\d+)?text/s\]", shown)
    assert done, shown[-2000:]
    assert f"{name}:   0%|" in shown and f"0/{total} [00:00<?, ?text/s]" in shown  # drawn from the start
    assert stdout == piped.stdout  # the bar never reaches stdout, which stays byte for byte the same
    check_stdout(name, stdout)
