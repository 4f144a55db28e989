"""ds_config.json: load, validate, and say what each block does at serving time.

The file is DeepSpeed's usual config. At serving time only two things in it act: the precision blocks
(`bf16`, `fp16`) choose the serving dtype, and the `inference` block gives `deepspeed.init_inference`
its options. ZeRO partitions training state (optimizer state, gradients; stage 3 also parameters), so
stage 2 has nothing to act on when serving: it acts in `wenmo tune` (app/tune/trainplan.py turns this file
into the training config). Stage 3 with parameter offload ("ZeRO-Inference") is the one mode that lowers GPU
memory for inference and is reported as not applied (see README). Training keys (`optimizer`, `scheduler`,
batch sizes) are accepted so one file serves both, and reported as used by `wenmo tune` only. Imports no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigError

_TRISTATE = (True, False, "auto")

# Known keys per block; anything else is a typo or an option Wenmo would silently ignore, so it is refused.
_PRECISION_KEYS = {
    "enabled", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale",
    "auto_cast", "consecutive_hysteresis", "immediate_grad_update",
}
_ZERO_KEYS = {
    "stage", "overlap_comm", "contiguous_gradients", "reduce_bucket_size", "allgather_bucket_size",
    "allgather_partitions", "reduce_scatter", "round_robin_gradients", "offload_param", "offload_optimizer",
    "stage3_max_live_parameters", "stage3_max_reuse_distance", "stage3_prefetch_bucket_size",
    "stage3_param_persistence_threshold", "stage3_gather_16bit_weights_on_model_save", "sub_group_size",
}
_OFFLOAD_KEYS = {"device", "pin_memory", "nvme_path", "buffer_count", "buffer_size", "max_in_cpu"}
_INFERENCE_KEYS = {"replace_with_kernel_inject", "enable_cuda_graph"}
_TRAINING_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
    "steps_per_print", "wall_clock_breakdown", "optimizer", "scheduler", "prescale_gradients",
}
_TOP_KEYS = {"bf16", "fp16", "zero_optimization", "inference"} | _TRAINING_KEYS


@dataclass(frozen=True)
class DsConfig:
    path: str
    bf16: bool | str = "auto"
    fp16: bool | str = "auto"
    zero_stage: int = 0
    zero_offload_param: str | None = None
    replace_with_kernel_inject: bool = False
    enable_cuda_graph: bool = False
    training_keys: tuple[str, ...] = field(default_factory=tuple)

    def effects(self) -> dict[str, str]:
        """What each block of the file does at serving time, for the start-up log line and `info`."""
        out = {
            "precision": f"bf16={self.bf16} fp16={self.fp16}: chooses the serving dtype when --dtype is auto",
            "inference": (
                f"init_inference(replace_with_kernel_inject={self.replace_with_kernel_inject}, "
                f"enable_cuda_graph={self.enable_cuda_graph}) when the engine is deepspeed"
            ),
        }
        if self.zero_stage in (1, 2):
            out["zero_optimization"] = (
                f"stage {self.zero_stage}: not applied for inference — used by `wenmo tune` (it partitions "
                "optimizer state and gradients, which inference does not have)"
            )
        elif self.zero_stage == 3:
            out["zero_optimization"] = (
                f"stage 3 (offload_param={self.zero_offload_param}): not applied — ZeRO-Inference parameter "
                "offload is not implemented in Wenmo; it would trade speed for GPU memory"
            )
        else:
            out["zero_optimization"] = "stage 0: nothing to apply"
        if self.training_keys:
            out["training"] = f"{', '.join(self.training_keys)}: ignored (training only; used by `wenmo tune`)"
        return out


def _fail(path: str, key: str, why: str) -> ConfigError:
    return ConfigError(f"{path}: key {key!r}: {why}")


def _check_keys(path: str, block: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, block or "<top level>", f"must be an object, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _fail(path, f"{block}.{key}" if block else key, f"unknown option; known options are {known}")
    return value


def _tristate(path: str, key: str, value: Any) -> bool | str:
    if value not in _TRISTATE or isinstance(value, int) and not isinstance(value, bool):
        raise _fail(path, key, f"must be true, false or \"auto\", got {value!r}")
    return value


def _bool(path: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, key, f"must be true or false, got {value!r}")
    return value


def parse_ds_config(data: Any, path: str = "ds_config.json") -> DsConfig:
    top = _check_keys(path, "", data, _TOP_KEYS)
    kwargs: dict[str, Any] = {"path": path}
    for name in ("bf16", "fp16"):
        if name in top:
            block = _check_keys(path, name, top[name], _PRECISION_KEYS)
            kwargs[name] = _tristate(path, f"{name}.enabled", block.get("enabled", False))
    if kwargs.get("bf16") is True and kwargs.get("fp16") is True:
        raise _fail(path, "bf16.enabled", "bf16 and fp16 cannot both be true; set one of them to false")
    if "zero_optimization" in top:
        zero = _check_keys(path, "zero_optimization", top["zero_optimization"], _ZERO_KEYS)
        stage = zero.get("stage", 0)
        if stage not in (0, 1, 2, 3) or isinstance(stage, bool):
            raise _fail(path, "zero_optimization.stage", f"must be 0, 1, 2 or 3, got {stage!r}")
        kwargs["zero_stage"] = stage
        for sub in ("offload_param", "offload_optimizer"):
            if sub in zero:
                _check_keys(path, f"zero_optimization.{sub}", zero[sub], _OFFLOAD_KEYS)
        if "offload_param" in zero:
            kwargs["zero_offload_param"] = str(zero["offload_param"].get("device", "none"))
    if "inference" in top:
        inf = _check_keys(path, "inference", top["inference"], _INFERENCE_KEYS)
        for key in _INFERENCE_KEYS:
            if key in inf:
                kwargs[key] = _bool(path, f"inference.{key}", inf[key])
    kwargs["training_keys"] = tuple(k for k in top if k in _TRAINING_KEYS)
    return DsConfig(**kwargs)


def load_ds_config(path: str | Path) -> DsConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the DeepSpeed config ({e.strerror}); pass --ds-config PATH") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    return parse_ds_config(data, str(p))
