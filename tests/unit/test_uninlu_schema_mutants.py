"""RexUniNLU schema and task validation: the exact messages people read (what was wrong, what is allowed,
what to do) and the edges of each limit. Each test kills mutants that tests/mutation.sh found surviving."""

from __future__ import annotations

import json

import pytest

from app.errors import InputError
from app.models.uninlu.schema import MAX_KEY_CHARS, MAX_TYPES, parse_schema, resolve_task

EXAMPLE = '{"人物": null, "组织机构": {"创始人(人物)": null}}'


def message(call, *args) -> str:
    with pytest.raises(InputError) as caught:
        call(*args)
    return caught.value.message


def test_a_control_token_in_a_type_name_is_refused():
    assert message(parse_schema, {"人物[TYPE]": None}) == (
        'schema["人物[TYPE]"]: a type name may not contain the model\'s control token [TYPE]; rename the type')


def test_a_type_name_of_exactly_the_maximum_length_is_kept():
    key = "长" * MAX_KEY_CHARS
    assert parse_schema({key: None}) == {key: None}
    longer = key + "长"
    assert message(parse_schema, {longer: None}) == (
        f'schema["{longer}"]: the type name is {MAX_KEY_CHARS + 1} characters long; at most {MAX_KEY_CHARS} '
        "are allowed — shorten it")


def test_too_many_types_says_to_split_the_request():
    schema = {f"t{i}": None for i in range(MAX_TYPES + 1)}
    assert message(parse_schema, schema) == (
        f'schema["t{MAX_TYPES}"]: the schema has more than {MAX_TYPES} types in total (all levels together); at most '
        f"{MAX_TYPES} are allowed — split it into several requests of at most {MAX_TYPES} types each")


def test_a_key_that_is_not_a_string_is_named_with_its_kind():
    assert message(parse_schema, {"人物": {1: None}}) == (
        'schema["人物"]: the key 1 is a number (1); every key must be a string naming a type')


@pytest.mark.parametrize(("schema", "kind"), [
    ("null", "null"),
    ("true", "a boolean"),
    ("[1]", "a list"),
    (json.dumps("x" * 50), f"a string ({'x' * 40!r})"),  # the first 40 characters only
])
def test_a_schema_that_is_not_an_object_names_what_it_is(schema, kind):
    assert message(parse_schema, schema) == f"schema must be a JSON object of types, got {kind}; e.g. {EXAMPLE}"


def test_a_value_of_another_python_type_is_named_by_its_type():
    assert message(parse_schema, {"人物": {1, 2}}) == (
        f'schema["人物"]: the value is a set; a value must be null (a leaf type) or an object of sub-types, '
        f"e.g. {EXAMPLE}")


def test_a_duplicate_key_is_named_as_written():
    assert message(parse_schema, '{"人物": null, "人物": null}') == (
        'schema: the key "人物" appears twice in the same object; each type may appear once per level — '
        "remove the duplicate")


def test_schema_bytes_that_are_not_utf8_are_read_with_replacement_characters():
    assert parse_schema(b'{"\xff\xe4\xba\xba": null}') == {"\ufffd人": None}


def test_text_and_task_of_the_wrong_kind_are_named():
    assert message(resolve_task, 5, None) == "text must be a string, got a number (5)"
    assert message(resolve_task, "文本", 5) == (
        "task must be one of extract, classify, multi_classify or auto, got a number (5)")
    assert message(resolve_task, "  ", None) == "text is empty: give the text to analyse"


def test_a_control_token_in_the_text_is_reported_where_it_first_appears():
    assert message(resolve_task, "ab[TYPE]cd[TYPE]", None) == (
        "the text contains the model's control token [TYPE] at character 2; it is reserved for the prompt "
        "(only a leading [CLASSIFY] or [MULTICLASSIFY] is allowed) — remove or rewrite it")


def test_a_schema_nested_past_the_json_parser_says_to_flatten_it():
    assert message(parse_schema, "[" * 100_000) == (
        "schema is nested too deeply (about a thousand [ or { inside each other, too many for the JSON parser); "
        f"a schema has at most 4 levels of types, e.g. {EXAMPLE} — flatten it")
