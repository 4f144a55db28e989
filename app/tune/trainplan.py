"""ds_config.json → the config `deepspeed.initialize` gets for tuning, with every `auto` resolved and each choice
given a reason (logged in one line, and kept in the report).

- ZeRO: the file's `zero_optimization` block as it is (stage 2 by default); `offload_optimizer: {"device": "cpu"}`
  keeps the optimizer state in host memory for a GPU short of it. Without a GPU the optimizer is on the CPU
  already, so an offload is dropped (it would only swap torch's AdamW for DeepSpeed's compiled CPU Adam).
- Optimizer: the file's `optimizer` block (AdamW by default); `--lr` replaces its `lr`. DeepSpeed builds it as
  torch's AdamW (`torch_adam`) unless the file says otherwise, except with an offload (DeepSpeedCPUAdam, a C++ op
  compiled at first use with the machine's g++). Why not DeepSpeed's own fused optimizers: without a GPU its
  FusedAdam for the CPU is a C++ op compiled at first use (3 min on the development machine); on a GPU its
  FusedAdam is compiled with nvcc at first use — a minute, and impossible where there is no nvcc (the CUDA runtime
  image, deploy/container). On an H200 (2026-11-27, `bench-tune --size full`) the FusedAdam configuration failed
  while plain AdamW and ZeRO-2 with CPU Adam ran; its error was not kept (bench-tune kept only stderr's last line).
- Precision: `auto` resolves by the serving rule (app/engine/runtime.py): bf16 where the GPU runs it at full rate,
  else fp16 (with DeepSpeed's loss scaling), fp32 without a GPU. DeepSpeed itself knows no `auto`.
- Batch: `--batch-size` replaces `train_micro_batch_size_per_gpu` (and drops a `train_batch_size` it would
  contradict); `gradient_accumulation_steps` and `gradient_clipping` are the file's.

Pure: no torch, no DeepSpeed, so the rules are unit-tested.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.dsconfig import load_ds_config, parse_ds_config
from app.engine.runtime import resolve_plan
from app.errors import ConfigError

DEFAULT_OPTIMIZER = {"type": "AdamW", "params": {"lr": 2e-5, "weight_decay": 0.01}}
OPTIMIZER_TYPES = ("Adam", "AdamW")
DEFAULT_MICRO_BATCH = 32
SERVING_ONLY = ("inference",)  # blocks DeepSpeed's training config has no use for


@dataclass(frozen=True)
class TrainPlan:
    config: dict[str, Any]
    device: str
    dtype: str
    zero_stage: int  # as the file asks; the report says what the engine built (engine.zero_optimization_stage())
    offload_optimizer: str
    micro_batch: int
    accumulation: int
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def log_line(self) -> str:
        return (f"tune plan device={self.device} dtype={self.dtype} zero_stage={self.zero_stage} "
                f"offload_optimizer={self.offload_optimizer} micro_batch={self.micro_batch} "
                f"accumulation={self.accumulation} optimizer={self.config['optimizer']['type']} "
                f"why=[{'; '.join(self.reasons)}]")


def read_raw(path: str | Path) -> dict[str, Any]:
    """The file's JSON, validated by the serving parser first (a typo is refused the same way in both)."""
    load_ds_config(path)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def training_config(raw: Mapping[str, Any], *, device: str, bf16_ok: Callable[[str], bool] = lambda d: False,
                    batch_size: int | None = None, lr: float | None = None, steps: int | None = None,
                    path: str = "ds_config.json") -> TrainPlan:
    """`raw`: ds_config.json's content; `device`: "cpu" or "cuda:N"; `bf16_ok`: whether that GPU runs bf16 at
    full rate. `steps` fills a scheduler's `total_num_steps: "auto"`."""
    ds = parse_ds_config(raw, path)
    cfg = copy.deepcopy(dict(raw))
    reasons: list[str] = []
    for key in SERVING_ONLY:
        cfg.pop(key, None)
    on_cuda = device.startswith("cuda")

    plan = resolve_plan(device, "auto", "torch", ds, cuda_available=lambda: on_cuda, bf16_supported=bf16_ok)
    dtype = plan.dtype
    for name in ("bf16", "fp16"):
        block = dict(cfg.get(name) or {})
        block["enabled"] = dtype == name
        cfg[name] = block
    reasons.append({"fp32": "fp32: no GPU" if not on_cuda else "fp32: ds_config disables fp16 and bf16",
                    "bf16": "bf16: the GPU runs it at full rate", "fp16": "fp16 with loss scaling"}[dtype])

    zero = dict(cfg.get("zero_optimization") or {"stage": 0})
    offload = str((zero.get("offload_optimizer") or {}).get("device", "none"))
    if offload != "none" and not on_cuda:
        zero.pop("offload_optimizer")
        reasons.append(f"offload_optimizer {offload} dropped: without a GPU the optimizer is on the CPU already")
        offload = "none"
    cfg["zero_optimization"] = zero

    optimizer = copy.deepcopy(cfg.get("optimizer") or DEFAULT_OPTIMIZER)
    if optimizer.get("type") not in OPTIMIZER_TYPES:
        raise ConfigError(f"{path}: key 'optimizer.type': {optimizer.get('type')!r} is not one `wenmo tune` uses; "
                          f"choose {' or '.join(OPTIMIZER_TYPES)}")
    params = dict(optimizer.get("params") or {})
    if lr is not None:
        params["lr"] = lr
    if "torch_adam" not in params and offload == "none":
        params["torch_adam"] = True
        reasons.append("torch AdamW: DeepSpeed's fused Adam for the CPU is compiled at first use" if not on_cuda else
                       "torch AdamW: DeepSpeed's FusedAdam is compiled with nvcc at first use, which the runtime "
                       "image does not have (set optimizer.params.torch_adam=false to use it)")
    optimizer["params"] = params
    cfg["optimizer"] = optimizer

    if batch_size is not None:
        cfg["train_micro_batch_size_per_gpu"] = batch_size
        cfg.pop("train_batch_size", None)
    cfg.setdefault("train_micro_batch_size_per_gpu", DEFAULT_MICRO_BATCH)
    cfg.setdefault("gradient_accumulation_steps", 1)
    cfg.setdefault("steps_per_print", 1 << 30)  # our own events report progress; DeepSpeed's lines would repeat it

    scheduler = cfg.get("scheduler")
    if isinstance(scheduler, dict) and (scheduler.get("params") or {}).get("total_num_steps") == "auto":
        if steps is None:
            raise ConfigError(f"{path}: key 'scheduler.params.total_num_steps': \"auto\" needs the step count")
        scheduler["params"]["total_num_steps"] = steps

    return TrainPlan(cfg, device, dtype, int(zero.get("stage", 0)), offload,
                     int(cfg["train_micro_batch_size_per_gpu"]), int(cfg["gradient_accumulation_steps"]),
                     tuple(reasons))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def distributed_env(env: Mapping[str, str] = os.environ, port: Callable[[], int] = free_port) -> dict[str, str]:
    """The variables torch.distributed needs that `env` lacks: a one-process group on a free local port. Under
    DeepSpeed's launcher (`deepspeed --num_gpus N -m app tune …`) every one is set already and nothing changes."""
    wanted = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    missing = {k: v for k, v in wanted.items() if not env.get(k)}
    if not env.get("MASTER_PORT"):
        missing["MASTER_PORT"] = str(port())
    return missing
