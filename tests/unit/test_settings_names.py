"""One name per setting: every `Settings` field is the flag `--` + field-with-dashes on exactly the commands its
scope names, the environment variable `WENMO_` + FIELD, and one row of the README's settings table naming both,
with the dataclass default. Nothing here is a list of fields: each test walks `dataclasses.fields(Settings)`."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from app.cli import build_parser, settings_from
from app.config import REPO_ROOT, SCOPES, Settings, env_name, flag_name
from app.errors import ConfigError

FIELDS = dataclasses.fields(Settings)
MODEL_COMMANDS = ("embed", "similarity", "nlu", "serve", "plan", "bench", "loadtest")  # README: scope "all"
REQUIRED = {"similarity": ["--source", "x"], "fixtures": ["--out", "x"]}
README = REPO_ROOT / "README.md"


def sample(f: dataclasses.Field) -> tuple[str, object]:
    """A valid value for `f` other than its default: (as typed, as parsed)."""
    if f.metadata["choices"]:
        text = next(c for c in reversed(f.metadata["choices"]) if c != f.default)
        return text, text
    if f.type in ("int", int):
        return str(f.default + 3), f.default + 3
    if f.type in ("float", float):
        return str(f.default + 1.5), f.default + 1.5
    special = {"device": "cpu", "min_batch_fill": "0.25", "onednn_primitive_cache": "8192"}
    text = special.get(f.name, f"value-of-{f.name}")
    return text, text


def parse(command: str, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args([command, *REQUIRED.get(command, []), *extra])


def refuses(command: str, *extra: str) -> bool:
    try:
        parse(command, *extra)
    except SystemExit as e:
        return e.code == 2
    return False


def test_every_field_has_a_known_scope_and_the_env_and_flag_names_of_the_rule() -> None:
    assert len(FIELDS) >= 30
    for f in FIELDS:
        assert f.metadata["scope"] in SCOPES, f.name
        assert env_name(f.name) == "WENMO_" + f.name.upper()
        assert flag_name(f.name) == "--" + f.name.replace("_", "-")
    # The two that must never be on a command line, where `ps` shows them, and the soak diagnostic (a flag would
    # invite turning on a tracer that slows every allocation in production).
    assert {f.name for f in FIELDS if f.metadata["scope"] == "env"} == {"auth", "auth_file", "heap_snapshot_dir"}


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_the_flag_is_taken_exactly_where_the_scope_says(f: dataclasses.Field, capsys: pytest.CaptureFixture) -> None:
    text, value = sample(f)
    scope = f.metadata["scope"]
    takers = {"common": MODEL_COMMANDS, "serve": ("serve",), "env": ()}[scope]
    for command in takers:
        args = parse(command, flag_name(f.name), text)
        assert getattr(args, f.name) == value, (command, f.name)
        # …and it reaches the settings, over the environment (which holds the default here).
        assert getattr(settings_from(args, {env_name(f.name): str(f.default)}), f.name) == value, (command, f.name)
    # `fixtures` runs no model; embed, nlu and plan take no server setting (embed and nlu name their model with
    # --model); a secret is no command's flag.
    refusers = {"common": ("fixtures",), "serve": ("embed", "nlu", "plan"), "env": (*MODEL_COMMANDS, "fixtures")}
    for command in refusers[scope]:
        assert refuses(command, flag_name(f.name), text), (command, f.name)
    capsys.readouterr()  # argparse's usage messages


def test_min_batch_fill_and_batch_across_requests_are_flags_where_models_run(capsys: pytest.CaptureFixture) -> None:
    """The issue's report: `--min-batch-fill` was documented but "unrecognized arguments"."""
    for command in MODEL_COMMANDS:
        args = parse(command, "--min-batch-fill", "0.7", "--batch-across-requests", "off")
        s = settings_from(args, {})
        assert (s.min_batch_fill, s.batch_across_requests) == ("0.7", "off")
    assert refuses("embed", "--batch-across-requests", "maybe")
    assert "argument --batch-across-requests: invalid choice: 'maybe'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--min-batch-fill / WENMO_MIN_BATCH_FILL: '2' is not valid"):
        settings_from(parse("embed", "--min-batch-fill", "2"), {})


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_the_environment_variable_is_read(f: dataclasses.Field) -> None:
    text, value = sample(f)
    assert getattr(Settings.from_env({env_name(f.name): text}), f.name) == value
    assert getattr(Settings.from_env({}), f.name) == f.default


def test_float_settings_refuse_nan_and_infinity() -> None:
    """float("nan") parses and `nan < 0` is False: WENMO_DRAIN_S=nan used to pass the check."""
    for f in FIELDS:
        if f.type in ("float", float):
            for bad in ("nan", "inf"):
                with pytest.raises(ConfigError, match=f"{flag_name(f.name)} / {env_name(f.name)} must be"):
                    Settings.from_env({env_name(f.name): bad})


# ---- the README's settings table ------------------------------------------------------------------------
def readme_settings_rows() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Settings\n"):]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split(" | ")]
    assert header == ["flag", "environment", "default", "scope", "what it does"], header
    return [[c.strip() for c in row.strip().strip("|").split(" | ")] for row in rows[2:]]


def readme_default(cell: str, f: dataclasses.Field) -> object:
    """The default a row states, in the field's type: `value` in backticks, or "empty"."""
    if cell == "empty":
        return ""
    m = re.fullmatch(r"`([^`]+)`", cell)
    assert m, f"{f.name}: the default cell {cell!r} is neither `value` nor empty"
    raw = m.group(1)
    if raw.startswith("~/"):
        return str(Path(raw).expanduser())
    if raw.startswith("<checkout>/"):
        return str(REPO_ROOT / raw.removeprefix("<checkout>/"))
    if f.type in ("int", int):
        return int(raw)
    if f.type in ("float", float):
        return float(raw)
    return raw


def test_readme_has_one_row_per_setting_with_its_flag_env_default_and_scope() -> None:
    rows = readme_settings_rows()
    by_env = {}
    for row in rows:
        assert len(row) == 5, row
        env = row[1].strip("`")
        assert env not in by_env, f"two rows for {env}"
        by_env[env] = row
    fields = {env_name(f.name): f for f in FIELDS}
    assert set(by_env) == set(fields), (
        f"rows without a field: {sorted(set(by_env) - set(fields))}; fields without a row: "
        f"{sorted(set(fields) - set(by_env))}")
    for env, f in fields.items():
        flag, _, default, scope, what = by_env[env]
        expected_scope = {"common": "all", "serve": "serve", "env": "env"}[f.metadata["scope"]]
        assert scope == expected_scope, (f.name, scope)
        assert flag == ("—" if expected_scope == "env" else f"`{flag_name(f.name)}`"), (f.name, flag)
        assert readme_default(default, f) == f.default, (f.name, default, f.default)
        assert what, f.name
