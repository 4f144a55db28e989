"""RexUniNLU schema validation, task choice and presets (pure Python: no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import InputError
from app.models.uninlu.presets import preset, preset_characters, presets, schema_json
from app.models.uninlu.schema import (
    MAX_DEPTH,
    MAX_TYPES,
    TASKS,
    parse_schema,
    resolve_task,
    schema_paths,
)

ROOT = Path(__file__).resolve().parents[2]


def test_dict_and_json_string_give_the_same_normalised_schema():
    want = {"组织机构": {"创始人(人物)": None, "总部(地理位置)": None}, "人物": None}
    assert parse_schema({"组织机构": {"创始人(人物)": None, "总部(地理位置)": {}}, "人物": {}}) == want
    assert parse_schema('{"组织机构": {"创始人(人物)": null, "总部(地理位置)": {}}, "人物": null}') == want
    assert parse_schema(b'{"a": null}') == {"a": None}


def test_parse_returns_a_copy():
    original = {"a": {"b": None}}
    parsed = parse_schema(original)
    parsed["a"]["c"] = None
    assert original == {"a": {"b": None}}


def test_paths_are_root_to_leaf():
    schema = parse_schema({"A": {"x": None, "y": {"z": None}}, "B": None})
    assert schema_paths(schema) == {("A", "x"), ("A", "y", "z"), ("B",)}


@pytest.mark.parametrize(
    ("schema", "fragments"),
    [
        ('{"人物": null', ["not valid JSON", "line 1, column 12"]),
        ('{"人物": None}', ["not valid JSON", "line 1, column 8", "null, not None"]),
        ('{\n  "a": null,\n  "b": nul\n}', ["line 3, column 8"]),
        ("", ["schema is empty"]),
        ("   ", ["schema is empty"]),
        ("{}", ["schema is empty"]),
        ({}, ["schema is empty"]),
        ("[1, 2]", ["must be a JSON object", "a list"]),
        (["人物"], ["must be a JSON object", "a list"]),
        ('"人物"', ["must be a JSON object", "a string"]),
        ("42", ["must be a JSON object", "a number (42)"]),
        (None, ["must be a JSON object", "null"]),
        ({1: None}, ["the key 1", "must be a string"]),
        ({"A": {("x",): None}}, ['schema["A"]', "must be a string"]),
        ({"": None}, ['schema[""]', "empty type name"]),
        ({"A": {"  ": None}}, ['schema["A"]["  "]', "empty type name"]),
        ({"A": ["x", "y"]}, ['schema["A"]', "a list", "null (a leaf type) or an object"]),
        ({"A": {"B": "x"}}, ['schema["A"]["B"]', "a string ('x')", "null (a leaf type) or an object"]),
        ({"A": 1}, ['schema["A"]', "a number (1)"]),
        ({"A": True}, ['schema["A"]', "a boolean"]),
        ('{"A": null, "A": {}}', ['"A" appears twice']),
        ({"人物[TYPE]": None}, ['schema["人物[TYPE]"]', "[TYPE]"]),
        ({"A": {"[PREFIX]x": None}}, ['schema["A"]["[PREFIX]x"]', "[PREFIX]"]),
        ({"[CLASSIFY]": None}, ["[CLASSIFY]"]),
        ({"问" * 121: None}, ["121 characters", "at most 120"]),
    ],
)
def test_bad_schemas_name_the_problem(schema, fragments):
    with pytest.raises(InputError) as err:
        parse_schema(schema)
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message


def test_too_deep_points_at_the_first_key_beyond_the_limit():
    ok = {"a": {"b": {"c": {"d": None}}}}
    assert parse_schema(ok) == ok and MAX_DEPTH == 4
    with pytest.raises(InputError) as err:
        parse_schema({"a": {"b": {"c": {"d": {"e": None}}}}})
    assert 'schema["a"]["b"]["c"]["d"]["e"]' in err.value.message
    assert "more than 4 levels" in err.value.message


def test_too_many_types_counts_every_level():
    flat = {f"t{i}": None for i in range(MAX_TYPES)}
    assert len(parse_schema(flat)) == MAX_TYPES
    nested = {"root": {f"t{i}": None for i in range(MAX_TYPES)}}  # 513 keys in total
    with pytest.raises(InputError) as err:
        parse_schema(nested)
    assert MAX_TYPES == 512
    assert "more than 512 types" in err.value.message and 'schema["root"]["t511"]' in err.value.message


@pytest.mark.parametrize(
    ("text", "task", "want"),
    [
        ("北京", None, ("extract", "北京")),
        ("北京", "auto", ("extract", "北京")),
        ("北京", "extract", ("extract", "北京")),
        ("北京", "classify", ("classify", "北京")),
        ("北京", "Multi-Classify", ("multi_classify", "北京")),
        ("[CLASSIFY]北京", None, ("classify", "北京")),
        ("[CLASSIFY]北京", "classify", ("classify", "北京")),
        ("[MULTICLASSIFY]北京", "auto", ("multi_classify", "北京")),
        ("#很满意", None, ("extract", "#很满意")),
    ],
)
def test_task_resolution(text, task, want):
    assert resolve_task(text, task) == want


@pytest.mark.parametrize(
    ("text", "task", "fragments"),
    [
        ("", None, ["text is empty"]),
        ("   \n\t", None, ["text is empty"]),
        (None, None, ["text must be a string"]),
        (123, None, ["text must be a string"]),
        ("北京", "summarize", ["unknown task 'summarize'", "extract, classify, multi_classify"]),
        ("北京", 3, ["task must be one of"]),
        ("北京[PREFIX]上海", None, ["[PREFIX]", "character 2"]),
        ("北京[TYPE]", "extract", ["[TYPE]", "character 2"]),
        ("北京[CLASSIFY]", None, ["[CLASSIFY]", "only a leading [CLASSIFY]"]),
        ("[CLASSIFY]北京[MULTICLASSIFY]", None, ["[MULTICLASSIFY]", "character 12"]),
        ("[CLASSIFY][CLASSIFY]北京", None, ["[CLASSIFY]", "character 10"]),
        ("[CLASSIFY]北京", "extract", ["selects classify", "task is extract"]),
        ("[MULTICLASSIFY]北京", "classify", ["selects multi_classify"]),
        ("[CLASSIFY]  ", None, ["empty after the [CLASSIFY] marker"]),
    ],
)
def test_bad_text_or_task_is_rejected_with_a_clear_message(text, task, fragments):
    with pytest.raises(InputError) as err:
        resolve_task(text, task)
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message


def test_presets_are_valid_and_cover_the_model_card_tasks():
    items = presets()
    ids = [p["id"] for p in items]
    assert len(ids) == len(set(ids))
    for wanted in ("ner", "relation", "event", "aspect_sentiment", "aspect_sentiment_implicit", "sentiment",
                   "multi_label", "nli", "text_matching", "extractive_mrc", "choice_mrc", "hierarchical"):
        assert wanted in ids
    for p in items:
        assert set(p) == {"id", "title_zh", "title_en", "task", "schema", "text", "note"}
        assert p["task"] in TASKS
        assert parse_schema(p["schema"]) == p["schema"]
        assert parse_schema(schema_json(p)) == p["schema"]
        assert resolve_task(p["text"], p["task"]) == (p["task"], p["text"])
    assert preset("aspect_sentiment_implicit")["text"].startswith("#")
    assert preset("nli")["schema"] == {"段落2和段落1的关系是：蕴含": None, "段落2和段落1的关系是：矛盾": None,
                                       "段落2和段落1的关系是：中立": None}
    assert preset("text_matching")["schema"] == {"文本匹配：相似": None, "文本匹配：不相似": None}
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        preset("nope")


def test_presets_are_copies():
    presets()[0]["schema"]["x"] = None
    assert "x" not in presets()[0]["schema"]


def test_the_tiny_vocabulary_covers_every_preset_character():
    from app.models.uninlu.fixture import rex_vocab

    vocab = rex_vocab()
    assert vocab[:3] == ["[PAD]", "[CLS]", "[SEP]"] and len(vocab) == len(set(vocab))
    missing = {ch for ch in preset_characters() if ch.strip() and ch.lower() not in vocab}
    assert not missing


def test_pure_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import app.models.uninlu, app.models.uninlu.schema, app.models.uninlu.presets\n"
        "import app.models.uninlu.prompt, app.models.uninlu.decode, app.models.uninlu.pipeline\n"
        "import app.models.uninlu.fixture\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
