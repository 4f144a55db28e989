import json

import pytest

from app.engine.dsconfig import load_ds_config, parse_ds_config
from app.errors import ConfigError


def test_repo_file_effects_say_zero2_is_not_applied(tmp_path):
    from pathlib import Path

    ds = load_ds_config(Path(__file__).resolve().parents[2] / "ds_config.json")
    assert ds.zero_stage == 2 and ds.bf16 == "auto" and ds.replace_with_kernel_inject is False
    effects = ds.effects()
    assert "stage 2: not applied for inference — used by `wenmo tune`" in effects["zero_optimization"]
    assert "optimizer state and gradients" in effects["zero_optimization"]
    assert "optimizer" in effects["training"]  # the training block the file now holds for `wenmo tune`
    assert "ignored (training only; used by `wenmo tune`)" in effects["training"]


def test_invalid_json_names_file_and_position(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text('{"fp16": {"enabled": true,}}')
    with pytest.raises(ConfigError) as e:
        load_ds_config(p)
    assert str(p) in e.value.message and "line 1" in e.value.message


@pytest.mark.parametrize(
    "data, key",
    [
        ({"inference": {"replace_with_kernel_injection": True}}, "inference.replace_with_kernel_injection"),
        ({"zero_optimisation": {"stage": 2}}, "zero_optimisation"),
        ({"zero_optimization": {"stage": 5}}, "zero_optimization.stage"),
        ({"fp16": {"enabled": "yes"}}, "fp16.enabled"),
        ({"zero_optimization": {"offload_param": {"devise": "cpu"}}}, "zero_optimization.offload_param.devise"),
        ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, "bf16.enabled"),
    ],
)
def test_unknown_or_invalid_keys_are_named(tmp_path, data, key):
    p = tmp_path / "ds.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        load_ds_config(p)
    assert f"{p}: key {key!r}" in e.value.message


def test_stage3_offload_reported_not_applied():
    ds = parse_ds_config({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}})
    assert ds.zero_offload_param == "cpu"
    assert "stage 3 (offload_param=cpu): not applied" in ds.effects()["zero_optimization"]
