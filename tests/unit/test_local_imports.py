"""Imports of `app` modules stand at the top of a module, in app/, launcher/ and bench/. One inside a function is
allowed only where it defers a heavy dependency on purpose, and a comment says which (`# deferred: pulls torch; …`),
on the import's own line or on the line above it (or above the run of adjacent imports it belongs to). The comment's
claim is checked: importing that module in a fresh interpreter does load the dependency it names.

And the shell's cheap paths stay cheap: `python -m app --help` (and a subcommand's `--help`) imports none of the
heavy libraries, so a typo in a flag is answered at once, on a machine without a GPU stack too.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "gradio", "deepspeed", "transformers", "httpx", "uvicorn", "fastapi")
HEAVY_NAMED = re.compile(r"\b(" + "|".join(HEAVY) + r")\b")
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
IMPORTS = (ast.Import, ast.ImportFrom)


def app_targets(node: ast.Import | ast.ImportFrom, in_app: bool) -> list[str]:
    """The `app` modules (or `app.x` names) an import statement names; [] when it names none."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "app" or a.name.startswith("app.")]
    if node.level:  # relative: inside the app package it is an app module, elsewhere (launcher/) it is not
        return [f"{'.' * node.level}{node.module or ''}"] if in_app else []
    module = node.module or ""
    if module != "app" and not module.startswith("app."):
        return []
    # `from app.x import y` imports the module app.x.y when there is one, else a name of app.x.
    return sorted({f"{module}.{a.name}" if is_module(f"{module}.{a.name}") else module for a in node.names})


def is_module(name: str) -> bool:
    path = REPO_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def local_app_imports(source: str, in_app: bool) -> list[tuple[ast.Import | ast.ImportFrom, list[str]]]:
    """Every import of an `app` module inside a function (at any depth), with the modules it names."""
    found = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, IMPORTS) and in_function and (targets := app_targets(child, in_app)):
                found.append((child, targets))
            walk(child, in_function or isinstance(child, FUNCTIONS))

    walk(ast.parse(source), False)
    return found


def run_heads(tree: ast.AST) -> dict[int, int]:
    """Line of each import statement → line of the first statement of the run of adjacent imports it is in (a
    run: import statements in one body, each starting on the line after the previous one ends)."""
    heads: dict[int, int] = {}
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            head = None
            previous = None
            for stmt in body:
                if not isinstance(stmt, IMPORTS):
                    head = previous = None
                    continue
                if previous is None or stmt.lineno != previous.end_lineno + 1:
                    head = stmt.lineno
                heads[stmt.lineno] = head
                previous = stmt
    return heads


def comments(source: str) -> dict[int, str]:
    """Line → the comment on it (tokenize: a `#` inside a string is not a comment)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


def named_heavy(node: ast.AST, lines: list[str], notes: dict[int, str], heads: dict[int, int]) -> set[str]:
    """The heavy libraries a comment names on the import's own lines or in the comment block right above its run;
    empty when there is no such comment."""
    wanted = list(range(node.lineno, node.end_lineno + 1))
    above = heads.get(node.lineno, node.lineno) - 1
    while above >= 1 and lines[above - 1].lstrip().startswith("#"):
        wanted.append(above)
        above -= 1
    return {m.group(1) for n in wanted for m in HEAVY_NAMED.finditer(notes.get(n, ""))}


def audit(source: str, in_app: bool = True) -> list[tuple[int, list[str], set[str]]]:
    """(line, modules, heavy libraries its comment names) for every function-local app import."""
    lines = source.splitlines()
    notes = comments(source)
    heads = run_heads(ast.parse(source))
    return [(node.lineno, targets, named_heavy(node, lines, notes, heads))
            for node, targets in local_app_imports(source, in_app)]


def checked_files() -> list[tuple[Path, bool]]:
    """app/ (its relative imports are app modules), then launcher/ and bench/ (theirs are their own)."""
    files = [(p, True) for p in sorted((REPO_ROOT / "app").rglob("*.py"))]
    return files + [(p, False) for d in ("launcher", "bench") for p in sorted((REPO_ROOT / d).rglob("*.py"))]


def test_the_audit_reads_app_launcher_and_bench():
    read = {p.relative_to(REPO_ROOT).parts[0] for p, _ in checked_files()}
    assert read == {"app", "launcher", "bench"}
    assert (REPO_ROOT / "bench" / "suite.py", False) in checked_files()


def test_the_audit_reads_comments_runs_and_relative_imports():
    source = (
        "from app.config import Settings\n"  # 1 top level: fine
        "def f():\n"
        "    from app.a import x\n"  # 3 no comment
        "    # deferred: pulls torch; `--help`\n"
        "    # must not pay for it\n"
        "    from app.b import y\n"  # 6 comment block above
        "    from app.c import (\n"  # 7 same run as line 6
        "        z,\n"
        "    )\n"
        "\n"
        "    from app.d import w\n"  # 11 a new run after a blank line: not covered
        "    import app.e  # gradio\n"  # 12 its own comment (its run's head, line 11, has none)
        "    import os\n"
        "    from . import g\n"  # 14 relative, inside app
        "    # a comment that names nothing heavy\n"
        "    from app.h import q\n"  # 16
        "    class K:\n"
        "        def m(self):\n"
        "            from app.i import r  # deferred: uvicorn, fastapi\n"  # 19 nested
        "    return 1\n"
    )
    got = audit(source)
    assert got == [
        (3, ["app.a"], set()),
        (6, ["app.b"], {"torch"}),
        (7, ["app.c"], {"torch"}),
        (11, ["app.d"], set()),
        (12, ["app.e"], {"gradio"}),
        (14, ["."], set()),
        (16, ["app.h"], set()),
        (19, ["app.i"], {"uvicorn", "fastapi"}),
    ]
    # launcher's and bench's relative imports are their own
    assert audit("def f():\n    from . import g\n", in_app=False) == []


def test_every_function_local_app_import_names_the_heavy_dependency_it_defers():
    offenders = []
    for path, in_app in checked_files():
        for line, targets, heavy in audit(path.read_text(encoding="utf-8"), in_app):
            if not heavy:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {', '.join(targets)}")
    assert not offenders, (
        "function-local imports of app modules without a comment naming the heavy dependency they defer "
        f"({', '.join(HEAVY)}); move them to the top of the module, or say why they stay:\n" + "\n".join(offenders))


def deferred_claims() -> dict[str, set[str]]:
    """Module → the heavy libraries the comments say importing it pulls (absolute imports only)."""
    claims: dict[str, set[str]] = {}
    for path, in_app in checked_files():
        for _line, targets, heavy in audit(path.read_text(encoding="utf-8"), in_app):
            for target in targets:
                if heavy and not target.startswith("."):
                    claims.setdefault(target, set()).update(heavy)
    return claims


@pytest.mark.slow
def test_each_deferred_import_really_pulls_what_its_comment_names():
    claims = deferred_claims()
    assert claims, "no deferred imports found: the audit reads nothing"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}

    def loaded(module: str) -> tuple[str, set[str], str]:
        code = (f"import importlib, sys\nimportlib.import_module({module!r})\n"
                f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        return module, set(done.stdout.split()), done.stderr[-1500:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(loaded, sorted(claims)))
    wrong = [f"{module}: the comment names {sorted(claims[module])}, importing it loads {sorted(got)} {err}"
             for module, got, err in results if not claims[module] & got]
    assert not wrong, "deferred imports that defer nothing heavy (move them to the top):\n" + "\n".join(wrong)


HELP_PROBE = f"""
import runpy, sys
sys.argv = ["python -m app", *sys.argv[1:]]
try:
    runpy.run_module("app", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("exit", code, "heavy", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["embed", "--help"], ["serve", "--help"], ["nlu", "--help"]])
def test_help_imports_no_heavy_library(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    done = subprocess.run([sys.executable, "-c", HELP_PROBE, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: python -m app"), done.stdout[:500]  # the help really was printed
    assert done.stdout.rstrip().splitlines()[-1] == "exit 0 heavy []"


def test_building_the_parser_imports_no_heavy_library():
    code = ("import sys, app.cli; app.cli.build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
