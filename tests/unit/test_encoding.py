"""Tokenization with truncation flags and the model's maximum length (app/models/encoding.py).

A real fast BERT tokenizer over the fixtures' tiny vocabulary: every Chinese character is one token, so a
text of k characters is k + 2 tokens ([CLS] … [SEP]) and a pair of k and m characters is k + m + 3. No torch.
"""

from __future__ import annotations

import json

import pytest

from app.models.checkpoint import load_tokenizer
from app.models.encoding import encode_pairs, encode_texts, model_max_length
from app.models.fixtures import tiny_vocab, write_bert_tokenizer

MAX = 8
CHARS = "北京天安门上海西班牙"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert-tokenizer")
    write_bert_tokenizer(root, tiny_vocab(), 512)
    return load_tokenizer(root)


def test_a_text_of_exactly_the_maximum_is_kept_whole_and_not_flagged(tok):
    exact, over = CHARS[: MAX - 2], CHARS[: MAX - 1]  # 8 and 9 tokens
    enc = encode_texts(tok, [exact, over], MAX)
    assert enc.truncated == [False, True]
    assert enc.lengths == [MAX, MAX]
    assert enc.ids[0] == tok(exact)["input_ids"]
    # the cut text keeps [CLS] and its first 6 characters, and ends with [SEP]
    assert enc.ids[1] == tok(CHARS[: MAX - 2])["input_ids"]
    assert enc.type_ids == [[0] * MAX, [0] * MAX]


def test_a_pair_of_exactly_the_maximum_is_kept_whole_and_not_flagged(tok):
    first = ["北京天", "北京天", "北京天安"]
    second = ["上海", "上海西", "上海"]  # 3 + 2 + 3 = 8 tokens; then 9; then 9
    enc = encode_pairs(tok, first, second, MAX)
    assert enc.truncated == [False, True, True]
    assert enc.lengths == [MAX, MAX, MAX]
    assert enc.ids[0] == tok("北京天", "上海")["input_ids"]
    assert enc.type_ids[0] == [0] * 5 + [1] * 3
    # longest first: the longer side loses the token (the tokenizer's rule cuts the first on a tie)
    assert enc.ids[1] == tok("北京", "上海西")["input_ids"]
    assert enc.ids[2] == tok("北京天", "上海")["input_ids"]


def test_pairs_within_the_maximum_are_all_kept_whole(tok):
    enc = encode_pairs(tok, ["北京", "天安门"], ["上海", "西"], MAX)
    assert enc.truncated == [False, False]
    assert enc.ids == [tok("北京", "上海")["input_ids"], tok("天安门", "西")["input_ids"]]
    assert enc.type_ids == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]]


def write_configs(root, configuration, positions=512):
    root.mkdir(parents=True, exist_ok=True)
    if configuration is not None:
        (root / "configuration.json").write_text(json.dumps(configuration), encoding="utf-8")
    return {"max_position_embeddings": positions} if positions is not None else {}


@pytest.mark.parametrize("configuration, positions, cap, want", [
    ({"preprocessor": {"max_length": 128}}, 512, 0, 128),  # the preprocessor's own limit, below the table
    ({"preprocessor": {"sequence_length": 200}}, 512, 0, 200),
    ({"max_length": 300}, 512, 0, 300),  # top-level max_length, used when the preprocessor names none
    ({"preprocessor": {"max_length": 1024}}, 256, 0, 256),  # never beyond the position table
    ({"preprocessor": {"type": "x"}}, 384, 0, 384),  # nothing declared: the table
    (None, 640, 0, 640),  # no configuration.json at all
    (None, None, 0, 512),  # neither: BERT's 512
    ({"preprocessor": {"max_length": 128}}, 512, 64, 64),  # a cap lowers it
    ({"preprocessor": {"max_length": 128}}, 512, 1000, 128),  # but never raises it
])
def test_model_max_length_comes_from_the_files(tmp_path, configuration, positions, cap, want):
    config = write_configs(tmp_path / "model", configuration, positions)
    assert model_max_length(tmp_path / "model", config, cap) == want


@pytest.mark.parametrize("content", ["[512]", "512", "\"max_length\"", "null"])
def test_a_configuration_json_that_is_not_an_object_is_a_clear_model_error(tmp_path, content):
    from app.errors import ModelUnavailableError

    (tmp_path / "configuration.json").write_text(content, encoding="utf-8")
    # Before: `[512]` raised a bare AttributeError ('list' object has no attribute 'get') at load time.
    with pytest.raises(ModelUnavailableError, match="configuration.json: holds a JSON .*, not an object"):
        model_max_length(tmp_path, {"max_position_embeddings": 512})
