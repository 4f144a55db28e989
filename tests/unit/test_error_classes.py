"""One error boundary: every WenmoError class carries its HTTP status, `type` and exit code; the README's error
table lists each of them; the shell's one renderer (`app.cli.report_error`) exits with the class's code; and no
error class of the app lives outside app/errors.py. Real `python -m app` runs are in tests/cli/test_cli_exit_codes.py.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import app.errors as errors
from app.cli import report_error
from app.errors import KIND_BY_STATUS, HttpError, RetryLaterError, WenmoError

REPO_ROOT = Path(__file__).resolve().parents[2]
# Never raised as they are: the root, the Retry-After base, and the class whose status another layer chose.
ABSTRACT = {WenmoError, RetryLaterError, HttpError}
# Error classes of the app allowed outside app/errors.py, with the reason.
ELSEWHERE = {
    # Also Starlette's MultipartParseError (so Gradio's upload parser deletes what it had begun); errors.py
    # imports nothing but the standard library.
    ("app/web/lifecycle.py", "BodyRefused"),
}


def every_subclass(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *every_subclass(sub)]
    return out


CLASSES = sorted({c for c in every_subclass(WenmoError) if c.__module__ == "app.errors"}, key=lambda c: c.__name__)
CONCRETE = [c for c in CLASSES if c not in ABSTRACT]


def instance(cls: type[WenmoError]) -> WenmoError:
    """An instance made through the class's own constructor, whatever its parameters."""
    given = {"message": "消息 message", "http_status": 418, "allow": ["GET"], "challenge": "Basic", "retry_after_s": 3,
             "request_id": "abcd1234", "headers": None}
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    return cls(**{p.name: given[p.name] for p in params if p.default is inspect.Parameter.empty})


def readme_error_rows() -> set[tuple[int, str, int]]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    header = "| status | `type` | exit | when |"
    assert text.count(header) == 1
    rows = set()
    for line in text[text.index(header):].splitlines()[2:]:
        if not line.startswith("| "):
            break
        status, kind, code, when = (c.strip() for c in line.strip().strip("|").split(" | "))
        assert re.fullmatch(r"`[a-z_]+`", kind) and when, line
        rows.add((int(status), kind.strip("`"), int(code)))
    return rows


def test_every_class_carries_status_type_and_exit_code() -> None:
    assert len(CONCRETE) >= 17
    for cls in CLASSES:
        assert isinstance(cls.http_status, int) and 400 <= cls.http_status <= 599, cls
        assert re.fullmatch(r"[a-z_]+_error", cls.kind), cls
        assert cls.exit_code in (1, 2), cls
        # The rule the exit codes follow: 2 = the user's to fix (input, settings, model files), 1 = the run failed.
        assert cls.exit_code == (2 if issubclass(cls, errors.InputError) or cls is errors.ModelUnavailableError
                                 else 1), cls


def test_a_model_that_cannot_load_exits_2_as_the_readme_says() -> None:
    """cli.py used to map ModelUnavailableError to 2 while the class said 1: the class is now the one source."""
    assert errors.ModelUnavailableError.exit_code == 2
    assert (503, "model_unavailable_error", 2) in readme_error_rows()


def test_the_readme_table_names_every_class_and_nothing_else() -> None:
    rows = readme_error_rows()
    for cls in CONCRETE:
        assert (cls.http_status, cls.kind, cls.exit_code) in rows, f"README lacks {cls.__name__}'s row"
    from_classes = {(c.http_status, c.kind, c.exit_code) for c in CONCRETE}
    # Statuses another layer chose come as HttpError, whose type and exit code follow from the status.
    from_edge = {(s, k, HttpError("x", s).exit_code) for s, k in KIND_BY_STATUS.items()}
    assert rows <= from_classes | from_edge, f"rows no error produces: {sorted(rows - from_classes - from_edge)}"


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_the_shell_renderer_exits_with_the_class_code(cls: type[WenmoError], capsys: pytest.CaptureFixture) -> None:
    error = instance(cls)
    assert report_error(error) == error.exit_code == (cls.exit_code if cls is not HttpError else 2)
    assert capsys.readouterr().err == f"error: {error.message}\n"


def test_http_errors_of_other_layers_take_their_exit_code_from_the_status(capsys: pytest.CaptureFixture) -> None:
    assert report_error(HttpError("x", 404)) == 2 and report_error(HttpError("y", 502)) == 1
    capsys.readouterr()


def test_an_unforeseen_exception_is_one_line_and_exit_1(capsys: pytest.CaptureFixture) -> None:
    assert report_error(KeyError("vocab")) == WenmoError.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the command failed: KeyError: 'vocab' (run with --log-level DEBUG")
    assert "Traceback" not in err


def test_no_exit_code_constants_outside_the_error_classes() -> None:
    """Exit codes were defined twice (cli.py EXIT_INPUT/EXIT_FAILED, server.py the same): now only the classes."""
    offenders = []
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n.id}" for n in names
                                  if isinstance(n, ast.Name) and n.id in ("EXIT_INPUT", "EXIT_FAILED")]
    assert not offenders, offenders


def test_error_classes_of_the_app_live_in_errors_py() -> None:
    """A class deriving from one of app/errors.py's elsewhere in app/ is an error type outside the tree; the ones
    with a reason to stay are listed in ELSEWHERE. (Internal signals that never reach a user, such as
    uninlu/decode.py's TooManySpans, derive from Exception and are translated where they are caught.)"""
    tree_names = {c.__name__ for c in every_subclass(Exception) if c.__module__ == "app.errors"}
    found = set()
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        rel = str(path.relative_to(REPO_ROOT))
        if rel == "app/errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                         for b in node.bases}
                if bases & tree_names:
                    found.add((rel, node.name))
    assert found == ELSEWHERE, f"move these into app/errors.py: {sorted(found - ELSEWHERE)}"


def test_the_abstract_bases_are_never_raised_as_they_are() -> None:
    calls = []
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "WenmoError", "RetryLaterError"):
                calls.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not calls, f"raise a class with its own status and type instead: {calls}"
