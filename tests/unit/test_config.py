import pytest

from app.config import Settings
from app.errors import ConfigError


def test_env_names_and_types():
    s = Settings.from_env({"WENMO_MAX_BATCH_TOKENS": "4096", "WENMO_DEVICE": "cuda:1", "WENMO_DRAIN_S": "2.5"})
    assert s.max_batch_tokens == 4096 and s.device == "cuda:1" and s.drain_s == 2.5


def test_flags_override_env_and_none_keeps():
    s = Settings.from_env({"WENMO_DTYPE": "fp16"}).replace(dtype=None, max_length=128, unrelated="x")
    assert s.dtype == "fp16" and s.max_length == 128


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"WENMO_DTYPE": "fp8"}, "choose one of auto, fp32, fp16, bf16"),
        ({"WENMO_ENGINE": "onnx"}, "auto, torch, deepspeed"),
        ({"WENMO_DEVICE": "tpu"}, "auto, cpu, cuda or cuda:N"),
        ({"WENMO_MAX_BATCH_TOKENS": "lots"}, "not an integer"),
        ({"WENMO_MAX_BATCH_TOKENS": "0"}, "must be ≥ 1"),
    ],
)
def test_invalid_values_name_the_choices(env, needle):
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert needle in e.value.message


def test_secret_not_in_repr():
    s = Settings.from_env({"WENMO_AUTH": "admin:hunter2"})
    assert s.auth == "admin:hunter2" and "hunter2" not in repr(s)
