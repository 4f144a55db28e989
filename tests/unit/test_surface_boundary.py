"""The surfaces (app/web/**, app/cli.py) talk to the service only through its methods and typed results: none
reads the adapters the service holds (`.embedder`, `.cross_encoder`, `.nlu_model`). An AST walk, so a comment or
a string that names them does not count, and an alias (`s = ctx.service; s.embedder`) does."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_FIELDS = {"embedder", "cross_encoder", "nlu_model"}
# `Settings.nlu_model` (and the argparse namespace built from it) is the model's *name*, a setting: not an adapter.
SETTINGS_BASES = ("settings", "args")


def surface_files() -> list[Path]:
    return sorted((ROOT / "app" / "web").rglob("*.py")) + [ROOT / "app" / "cli.py"]


def adapter_reads(source: str) -> list[str]:
    """`line: expression` for every read of an adapter field, as an attribute or through getattr/hasattr."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ADAPTER_FIELDS:
            base = ast.unparse(node.value)
            if not base.split(".")[-1].endswith(SETTINGS_BASES):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in ADAPTER_FIELDS):
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {text}" for line, text in sorted(found)]


def test_the_check_sees_every_way_in_and_spares_settings():
    source = (
        "d = service.embedder.dimension\n"
        "n = ctx.service.cross_encoder.info.name\n"
        "s = ctx.service\n"
        "m = s.nlu_model\n"
        "x = getattr(service, 'embedder', None)\n"
        "name = settings.nlu_model\n"
        "other = ctx.settings.nlu_model\n"
        "flag = args.nlu_model\n"
        "# service.embedder in a comment\n"
        "text = 'service.embedder'\n"
    )
    assert adapter_reads(source) == [
        "1: service.embedder",
        "2: ctx.service.cross_encoder",
        "4: s.nlu_model",
        "5: getattr(service, 'embedder', None)",
    ]


def test_surfaces_never_touch_the_adapters():
    files = surface_files()
    assert len(files) > 10 and ROOT / "app" / "web" / "api.py" in files  # the walk found the surfaces
    offenders = {str(p.relative_to(ROOT)): reads for p in files
                 if (reads := adapter_reads(p.read_text(encoding="utf-8")))}
    assert offenders == {}, "use the service's typed results, models() or describe() instead"
