"""The model's maximum length and its cap at their edges (each test kills a mutant that tests/mutation.sh
found surviving): no cap given, and the smallest cap."""

import json

from app.models.encoding import model_max_length


def model_dir(tmp_path, configuration):
    (tmp_path / "configuration.json").write_text(json.dumps(configuration), "utf-8")
    return tmp_path


def test_without_a_cap_the_declared_limit_holds(tmp_path):
    d = model_dir(tmp_path, {"preprocessor": {"max_length": 256}})
    assert model_max_length(d, {"max_position_embeddings": 512}) == 256  # as bench/baselines.py calls it
    assert model_max_length(d, {"max_position_embeddings": 512}, 0) == 256


def test_a_cap_of_one_is_a_cap(tmp_path):
    d = model_dir(tmp_path, {"preprocessor": {"max_length": 256}})
    assert model_max_length(d, {"max_position_embeddings": 512}, 1) == 1
    assert model_max_length(d, {"max_position_embeddings": 512}, 2) == 2


def test_without_configuration_json_the_position_table_is_the_limit(tmp_path):
    assert model_max_length(tmp_path, {"max_position_embeddings": 128}) == 128
