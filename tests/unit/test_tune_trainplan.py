"""ds_config.json → the DeepSpeed training config: every `auto` resolved, each override in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.tune.trainplan import distributed_env, read_raw, training_config

ROOT = Path(__file__).resolve().parents[2]


def repo_file() -> dict:
    return read_raw(ROOT / "ds_config.json")


def test_the_repo_file_on_a_cpu_is_zero2_fp32_with_torch_adamw():
    plan = training_config(repo_file(), device="cpu")
    cfg = plan.config
    assert plan.zero_stage == 2 and cfg["zero_optimization"]["stage"] == 2
    assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False and plan.dtype == "fp32"
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["optimizer"]["params"]["lr"] == 2e-5 and plan.micro_batch == 32 and plan.accumulation == 1
    assert "inference" not in cfg
    json.dumps(cfg)  # DeepSpeed gets plain JSON values


@pytest.mark.parametrize("bf16_ok, dtype", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_a_gpu_follows_the_serving_rule(bf16_ok, dtype):
    plan = training_config(repo_file(), device="cuda:0", bf16_ok=lambda d: bf16_ok)
    assert plan.dtype == dtype
    assert plan.config["bf16"]["enabled"] is (dtype == "bf16") and plan.config["fp16"]["enabled"] is (dtype == "fp16")
    # torch's AdamW, not DeepSpeed's FusedAdam: that one is compiled with nvcc at first use
    assert plan.config["optimizer"]["params"]["torch_adam"] is True
    assert any("FusedAdam is compiled with nvcc" in r for r in plan.reasons)


def test_offload_is_kept_on_a_gpu_and_dropped_on_a_cpu():
    raw = repo_file()
    raw["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    gpu = training_config(raw, device="cuda:0")
    assert gpu.offload_optimizer == "cpu" and gpu.config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert "torch_adam" not in gpu.config["optimizer"]["params"]  # the offload's own: DeepSpeedCPUAdam
    cpu = training_config(raw, device="cpu")
    assert cpu.offload_optimizer == "none" and "offload_optimizer" not in cpu.config["zero_optimization"]
    assert any("offload_optimizer cpu dropped" in r for r in cpu.reasons)
    assert raw["zero_optimization"]["offload_optimizer"]["device"] == "cpu"  # the caller's dict is not changed


def test_flags_override_the_file_and_drop_a_contradicting_total():
    raw = dict(repo_file(), train_batch_size=64)
    plan = training_config(raw, device="cpu", batch_size=8, lr=1e-3)
    assert plan.micro_batch == 8 and "train_batch_size" not in plan.config
    assert plan.config["optimizer"]["params"]["lr"] == 1e-3
    assert training_config(raw, device="cpu").config["train_batch_size"] == 64


def test_scheduler_auto_steps_and_a_foreign_optimizer():
    raw = dict(repo_file(), scheduler={"type": "WarmupDecayLR", "params": {"total_num_steps": "auto"}})
    assert training_config(raw, device="cpu", steps=40).config["scheduler"]["params"]["total_num_steps"] == 40
    with pytest.raises(ConfigError, match="optimizer.type.*'Lamb'"):
        training_config(dict(repo_file(), optimizer={"type": "Lamb"}), device="cpu")
    with pytest.raises(ConfigError, match="unknown option"):
        training_config(dict(repo_file(), zero_optimisation={}), device="cpu")


def test_distributed_env_fills_only_what_is_missing():
    assert distributed_env({}, port=lambda: 12345) == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "12345"}
    launched = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert distributed_env(launched, port=lambda: 1) == {}


def test_a_file_that_asks_for_deepspeeds_fused_adam_gets_it():
    raw = repo_file()
    raw["optimizer"]["params"]["torch_adam"] = False
    plan = training_config(raw, device="cuda:0")
    assert plan.config["optimizer"]["params"]["torch_adam"] is False
    assert not any("torch AdamW" in r for r in plan.reasons)
