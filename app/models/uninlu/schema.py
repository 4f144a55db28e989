"""RexUniNLU schemas and tasks: validate what the user sent before anything is tokenized.

A schema is a nested JSON object: every key is a type (an entity type, a relation, an event argument, a
class label); every value is `null`/`{}` (a leaf) or another object (the types to look for in relation to
each span found for that type). Errors are InputErrors that name the offending key by its path, e.g.
`schema["组织机构"]["创始人(人物)"]`, say what is allowed and what to do.

Tasks: `extract` (spans), `classify` (one label path), `multi_classify` (label paths above a confidence).
`None`/`"auto"` means extract, unless the text starts with the model card's `[CLASSIFY]` or
`[MULTICLASSIFY]` marker, which selects the classification mode.

Pure Python: imports neither torch nor transformers.
"""

from __future__ import annotations

import json
from typing import Any

from app.errors import InputError

PREFIX_TOKEN = "[PREFIX]"
TYPE_TOKEN = "[TYPE]"
CLASSIFY_TOKEN = "[CLASSIFY]"
MULTI_CLASSIFY_TOKEN = "[MULTICLASSIFY]"
# Appended to the tokenizer in this order at load time (ids V, V+1, V+2, V+3).
ADDED_TOKENS = (PREFIX_TOKEN, TYPE_TOKEN, CLASSIFY_TOKEN, MULTI_CLASSIFY_TOKEN)

TASKS = ("extract", "classify", "multi_classify")
MARKERS = {"classify": CLASSIFY_TOKEN, "multi_classify": MULTI_CLASSIFY_TOKEN}

MAX_DEPTH = 4
# Any number of types fits the prompt (a level's types are split into hints of at most 256 tokens, each one more
# pass per window of text); the work budget (WENMO_NLU_MAX_FORWARDS) bounds what a schema costs. This cap only
# keeps validation and prompt building small before the budget can bite: 512 four-character types are ~11
# hints, 11 passes per window.
MAX_TYPES = 512
# A type longer than 125 tokens is skipped by the prompt builder; a BERT token covers at least one character,
# so a key of at most 120 characters is never skipped.
MAX_KEY_CHARS = 120

Schema = dict[str, Any]

_EXAMPLE = '{"人物": null, "组织机构": {"创始人(人物)": null}}'


def _path(keys: list[str]) -> str:
    return "schema" + "".join(f"[{json.dumps(k, ensure_ascii=False)}]" for k in keys)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError(
                f"schema: the key {json.dumps(k, ensure_ascii=False)} appears twice in the same object; "
                "each type may appear once per level — remove the duplicate"
            )
        out[k] = v
    return out


def parse_schema(schema: Any) -> Schema:
    """A validated copy of `schema` (a dict or a JSON string) with every leaf normalised to None."""
    if isinstance(schema, (bytes, bytearray)):
        schema = schema.decode("utf-8", errors="replace")
    if isinstance(schema, str):
        if not schema.strip():
            raise InputError(f"schema is empty: give a JSON object of types, e.g. {_EXAMPLE}")
        try:
            schema = json.loads(schema, object_pairs_hook=_reject_duplicates)
        except json.JSONDecodeError as e:
            raise InputError(
                f"schema is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}. "
                f"A schema is a JSON object such as {_EXAMPLE} (null, not None; double quotes)"
            ) from None
        except RecursionError:  # the parser recurses once per [ or {: about a thousand of them end it
            raise InputError(
                f"schema is nested too deeply (about a thousand [ or {{ inside each other, too many for the JSON "
                f"parser); a schema has at most {MAX_DEPTH} levels of types, e.g. {_EXAMPLE} — flatten it"
            ) from None
    if not isinstance(schema, dict):
        raise InputError(
            f"schema must be a JSON object of types, got {_kind(schema)}; e.g. {_EXAMPLE}"
        )
    if not schema:
        raise InputError(f"schema is empty: name at least one type, e.g. {_EXAMPLE}")
    count = [0]
    return _check_level(schema, [], count)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _check_level(level: dict, keys: list[str], count: list[int]) -> Schema:
    out: Schema = {}
    for key, value in level.items():
        here = [*keys, str(key)]
        if not isinstance(key, str):
            raise InputError(
                f"{_path(keys)}: the key {key!r} is {_kind(key)}; every key must be a string naming a type"
            )
        if not key.strip():
            raise InputError(f"{_path(here)}: empty type name; every key must name a type — remove it or fill it in")
        for token in ADDED_TOKENS:
            if token in key:
                raise InputError(
                    f"{_path(here)}: a type name may not contain the model's control token {token}; "
                    "rename the type"
                )
        if len(key) > MAX_KEY_CHARS:
            raise InputError(
                f"{_path(here)}: the type name is {len(key)} characters long; at most {MAX_KEY_CHARS} are allowed — "
                "shorten it"
            )
        count[0] += 1
        if count[0] > MAX_TYPES:
            raise InputError(
                f"{_path(here)}: the schema has more than {MAX_TYPES} types in total (all levels together); at "
                f"most {MAX_TYPES} are allowed — split it into several requests of at most {MAX_TYPES} types each"
            )
        if len(here) > MAX_DEPTH:
            raise InputError(
                f"{_path(here)}: the schema is nested more than {MAX_DEPTH} levels deep; "
                f"at most {MAX_DEPTH} levels are allowed — flatten it"
            )
        if value is None or (isinstance(value, dict) and not value):
            out[key] = None
        elif isinstance(value, dict):
            out[key] = _check_level(value, here, count)
        else:
            raise InputError(
                f"{_path(here)}: the value is {_kind(value)}; a value must be null (a leaf type) or an object "
                f"of sub-types, e.g. {_EXAMPLE}"
            )
    return out


def schema_paths(schema: Schema) -> set[tuple[str, ...]]:
    """Every root-to-leaf path of type names: the paths an output element may have."""
    out: set[tuple[str, ...]] = set()

    def walk(level: Schema, prefix: tuple[str, ...]) -> None:
        for key, value in level.items():
            if value:
                walk(value, (*prefix, key))
            else:
                out.add((*prefix, key))

    walk(schema, ())
    return out


def resolve_task(text: Any, task: str | None) -> tuple[str, str]:
    """(task, body): the concrete task and the text without a leading [CLASSIFY]/[MULTICLASSIFY] marker.

    Rejects empty text, unknown tasks, a marker that contradicts the task, and the model's control tokens
    anywhere else in the text (they would corrupt the prompt)."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {_kind(text)}")
    if not text.strip():
        raise InputError("text is empty: give the text to analyse")
    if task is not None and not isinstance(task, str):
        raise InputError(f"task must be one of {', '.join(TASKS)} or auto, got {_kind(task)}")
    wanted = (task or "auto").strip().lower().replace("-", "_")
    if wanted not in (*TASKS, "auto"):
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}, or auto")
    marked = None
    body = text
    # The longer marker first: "[MULTICLASSIFY]" does not start with "[CLASSIFY]", but keep the order explicit.
    for name, marker in (("multi_classify", MULTI_CLASSIFY_TOKEN), ("classify", CLASSIFY_TOKEN)):
        if text.startswith(marker):
            marked, body = name, text[len(marker):]
            break
    if marked is not None and wanted != "auto" and wanted != marked:
        raise InputError(
            f"the text starts with {MARKERS[marked]}, which selects {marked}, but the task is {wanted}; "
            f"remove the marker or use task {marked} (or auto)"
        )
    resolved = marked if wanted == "auto" and marked else ("extract" if wanted == "auto" else wanted)
    for token in ADDED_TOKENS:
        at = body.find(token)
        if at >= 0:
            where = at + (len(text) - len(body))
            raise InputError(
                f"the text contains the model's control token {token} at character {where}; it is reserved for the "
                "prompt (only a leading [CLASSIFY] or [MULTICLASSIFY] is allowed) — remove or rewrite it"
            )
    if not body.strip():
        marker = MARKERS.get(marked or "", "marker")
        raise InputError(f"text is empty after the {marker} marker: give the text to classify")
    return resolved, body
