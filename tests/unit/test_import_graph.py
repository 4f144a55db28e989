"""No import circles in `app`: the graph of `app` modules (every `import app…` / `from app… import`, at the top of a
module or inside a function) has no cycle, and each module imports on its own in a fresh interpreter.

A function-level import does not make a circle harmless: it still ties the two modules together both ways, and
whether it fails depends on which module a process happens to import first. The graph is read from the source
(ast), so a circle is found even where no test happens to run the importing function.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / "app").rglob("*.py"))}


def imported_app_modules(path: Path, modules: dict[str, Path], root: Path = REPO_ROOT) -> list[tuple[str, int]]:
    """(module, line) for every import of an app module in `path`, wherever in the file it stands."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # `from app.x import y` imports the module app.x.y when there is one, else a name of app.x.
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import app.x.y.Z`-like spellings: the module that holds it
                name = name.rpartition(".")[0]
            if name and name != "app" and name != here:
                found.append((name, node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    modules = app_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lines: dict[tuple[str, str], int] = {}
    for name, path in modules.items():
        for target, line in imported_app_modules(path, modules):
            graph[name].add(target)
            lines.setdefault((name, target), line)
    return graph, lines


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (each one holds at least one circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def one_circle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module, for the failure message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError("a component without a circle")


def test_the_reader_sees_top_level_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The graph builder itself, on a made-up package: every spelling of an import becomes an edge."""
    fake_root = tmp_path / "app"
    (fake_root / "sub").mkdir(parents=True)
    for rel in ("__init__.py", "sub/__init__.py", "sub/b.py", "c.py", "d.py", "e.py"):
        (fake_root / rel).write_text("")
    source = fake_root / "sub" / "a.py"
    source.write_text("from app.c import thing\nimport app.d\n\ndef f():\n    from app.sub import b\n"
                      "    from . import b as again\n    from ..e import x\n    import os\n")
    got = imported_app_modules(source, app_modules(tmp_path), tmp_path)
    assert got == [("app.c", 1), ("app.d", 2), ("app.sub.b", 5), ("app.sub.b", 6), ("app.e", 7)]


def test_cycle_finder_finds_a_circle_and_only_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert one_circle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_app_has_no_import_circles() -> None:
    graph, lines = import_graph()
    assert len(graph) > 40 and "app.engine.runtime" in graph["app.engine.wrapping"]  # the reader reads
    circles = []
    for component in strongly_connected(graph):
        circle = one_circle(graph, component)
        steps = [f"{a} (line {lines[a, b]}) → {b}" for a, b in zip(circle, circle[1:], strict=False)]
        circles.append(f"{len(component)} modules {component}; e.g. " + ", ".join(steps))
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.slow
def test_every_app_module_imports_alone_in_a_fresh_interpreter() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}

    def try_import(name: str) -> tuple[str, int, str]:
        done = subprocess.run([sys.executable, "-c", f"import importlib; importlib.import_module({name!r})"],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        return name, done.returncode, done.stderr[-1500:]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(try_import, sorted(app_modules())))
    failed = [f"{name} (exit {code}):\n{err}" for name, code, err in results if code != 0]
    assert not failed, "\n\n".join(failed)
