"""`python -m app hash-password`: a `user:pbkdf2_sha256$…` line for WENMO_AUTH_FILE, from a password typed twice at
a prompt or given as the first line of stdin (never an argument). Its refusals leave through the CLI's one error
renderer (app/cli.py `report_error`): `error: …` on stderr, InputError's status 2, no traceback.

The prompt path runs under a real pseudo-terminal, since getpass reads the controlling terminal, not stdin.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.errors import InputError
from app.web.auth import HASH_ITERATIONS, Secret, parse_credential_line

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def hash_cmd(*args: str, stdin: str | bytes = "") -> subprocess.CompletedProcess[bytes]:
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    return subprocess.run([sys.executable, "-m", "app", "hash-password", *args], input=data, capture_output=True,
                          cwd=ROOT, env=clean_env(), timeout=120)


def refusal(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode("utf-8")
    assert done.returncode == InputError.exit_code == 2, err
    assert "Traceback" not in err and done.stdout == b"", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_line_from_stdin_becomes_a_line_the_server_accepts():
    done = hash_cmd("--user", "  grace ", "--iterations", "1000", stdin="密码 with spaces \r\nsecond line ignored\n")
    assert done.returncode == 0, done.stderr
    line = done.stdout.decode("utf-8").strip()
    assert line.startswith("grace:pbkdf2_sha256$1000$"), line  # the name as parse_credential_line reads it
    secret = parse_credential_line(line, "stdout")
    assert isinstance(secret, Secret) and secret.user == "grace" and secret.iterations == 1000
    assert secret.matches("密码 with spaces ") and not secret.matches("密码 with spaces")
    assert not secret.matches("second line ignored")


def test_the_defaults_are_the_generated_user_and_owasps_iterations():
    done = hash_cmd(stdin="pw\n")
    assert done.returncode == 0, done.stderr
    user, _, stored = done.stdout.decode().strip().partition(":")
    assert user == "wenmo" and stored.split("$")[:2] == ["pbkdf2_sha256", str(HASH_ITERATIONS)]


@pytest.mark.parametrize(("args", "stdin", "expected"), [
    (["--user", "a:b"], "pw\n", "error: --user 'a:b': a user name must be non-empty and must not contain ':'"),
    (["--user", "  "], "pw\n", "error: --user '  ': a user name must be non-empty"),
    (["--iterations", "0"], "pw\n", "error: --iterations 0: must be at least 1; leave it out for the default 600000"),
    ([], "", "error: the password is empty; type one at the prompt or give it as the first line of stdin"),
    ([], "\n", "error: the password is empty"),
    ([], b"\xff\xfe\n", "error: stdin is not UTF-8 text; give the password as one UTF-8 line"),
])
def test_bad_input_is_refused_by_the_one_renderer(args, stdin, expected):
    assert refusal(hash_cmd(*args, stdin=stdin)).startswith(expected)


def test_the_password_is_never_an_argument():
    done = hash_cmd("--password", "hunter2", stdin="pw\n")
    assert done.returncode == 2 and b"unrecognized arguments: --password hunter2" in done.stderr
    assert done.stdout == b""


def on_a_terminal(answers: list[str]) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as stdin and controlling terminal; answer each prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing of pytest's runs here
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "app", "hash-password", "--user", "tty",
                                   "--iterations", "1000"], clean_env())
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (exited)
                break
            if not chunk:
                break
            seen += chunk
            # getpass flushes typed-ahead input before it shows a prompt: answer each prompt once it is shown.
            prompts = seen.count(b"Password:") + seen.count(b"Again:")
            while pending and prompts > len(answers) - len(pending):
                os.write(fd, pending.pop(0).encode("utf-8") + b"\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode("utf-8", "replace")


def test_on_a_terminal_the_password_is_asked_twice_and_not_echoed():
    code, output = on_a_terminal(["pässwort", "pässwort"])
    assert code == 0, output
    assert "Password:" in output and "Again:" in output
    assert "pässwort" not in output  # getpass turns echo off
    line = next(x for x in output.splitlines() if x.startswith("tty:"))
    assert parse_credential_line(line.strip(), "tty").matches("pässwort")


def test_on_a_terminal_two_different_passwords_are_refused():
    code, output = on_a_terminal(["one", "two"])
    assert code == 2, output
    assert "error: the two passwords differ; run the command again and type the same password twice" in output
    assert "tty:pbkdf2" not in output and "Traceback" not in output
