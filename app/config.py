"""Settings: one frozen dataclass, read from the environment here and nowhere else.

Every field has one name everywhere: field `max_batch_tokens` = env `WENMO_MAX_BATCH_TOKENS` = flag
`--max-batch-tokens`. Invalid values fail at start with the valid choices in the message.
Imports nothing from the rest of the app except the error tree.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_EMBED_MODEL = "iic/nlp_gte_sentence-embedding_chinese-large"
DEFAULT_CROSS_MODEL = "iic/nlp_structbert_sentence-similarity_chinese-large"
DEFAULT_NLU_MODEL = "iic/nlp_deberta_rex-uninlu_chinese-base"

DEVICE_HINT = "auto, cpu, cuda or cuda:N"
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
ENGINE_CHOICES = ("auto", "torch", "deepspeed")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, *, flag: bool = True,
         secret: bool = False) -> Any:
    # `flag=False`: environment only (secrets must never be on a command line, where `ps` shows them).
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag}, repr=not secret)


@dataclass(frozen=True)
class Settings:
    # runtime plan
    device: str = _opt("auto", f"where models run: {DEVICE_HINT}")
    dtype: str = _opt("auto", "weights/activations dtype (auto: fp16/bf16 on CUDA, fp32 on CPU)", DTYPE_CHOICES)
    engine: str = _opt("auto", "inference engine (auto: deepspeed on CUDA, torch on CPU)", ENGINE_CHOICES)
    ds_config: str = _opt(str(REPO_ROOT / "ds_config.json"), "DeepSpeed config file")
    model_dir: str = _opt(
        str(Path.home() / ".cache" / "wenmo" / "models"), "cache directory for downloaded ModelScope models"
    )
    # batching and limits
    max_length: int = _opt(0, "cap on tokens per text (0: each model's own maximum)")
    max_batch_tokens: int = _opt(16384, "token budget per forward pass (longest × batch size)")
    max_batch_size: int = _opt(128, "texts per forward pass at most")
    max_texts: int = _opt(10000, "texts per call at most")
    max_chars: int = _opt(20000, "characters per text at most")
    # models
    embed_model: str = _opt(DEFAULT_EMBED_MODEL, "GTE embedding model: local directory or ModelScope id")
    cross_model: str = _opt(DEFAULT_CROSS_MODEL, "StructBERT cross-encoder: local directory or ModelScope id")
    nlu_model: str = _opt(DEFAULT_NLU_MODEL, "RexUniNLU model: local directory or ModelScope id")
    # process
    state_dir: str = _opt(str(Path.home() / ".local" / "state" / "wenmo"),
                          "state directory (generated password, demo models, launcher events)")
    log_level: str = _opt("INFO", "log level", ("DEBUG", "INFO", "WARNING", "ERROR"))
    # serving
    host: str = _opt("127.0.0.1", "address to bind (0.0.0.0 for every interface)")
    port: int = _opt(7860, "port to listen on")
    max_concurrent: int = _opt(0, "inferences running at once (0: 2 on a GPU, 1 per 2 CPU cores)")
    max_queue: int = _opt(16, "requests waiting for a slot before new ones are answered busy")
    drain_s: float = _opt(30.0, "seconds in-flight requests get to finish after SIGTERM")
    max_upload_mib: int = _opt(20, "largest uploaded file, MiB")
    auth: str = _opt("", "user:password for HTTP basic auth (environment only)", flag=False, secret=True)
    auth_file: str = _opt("", "file of user:password or user:salted-hash lines (environment only)", flag=False)

    def replace(self, **changes: Any) -> Settings:
        """Apply overrides (e.g. CLI flags); `None` means "not given" and keeps the current value."""
        given = {k: v for k, v in changes.items() if v is not None and k in FIELD_NAMES}
        return validate(dataclasses.replace(self, **given))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = parse_value(f, raw, source=env_name(f.name))
        return validate(cls(**values))


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


def env_name(field_name: str) -> str:
    return "WENMO_" + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def parse_value(f: dataclasses.Field, raw: str, source: str) -> Any:
    if f.type in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{source}={raw!r} is not an integer; give a whole number such as 512") from None
    if f.type in ("float", float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{source}={raw!r} is not a number; give one such as 30") from None
    return raw


def validate(s: Settings) -> Settings:
    for f in dataclasses.fields(s):
        choices = f.metadata.get("choices")
        value = getattr(s, f.name)
        if choices and value not in choices:
            raise ConfigError(
                f"{flag_name(f.name)} / {env_name(f.name)}: {value!r} is not valid; choose one of {', '.join(choices)}"
            )
        if f.type in ("int", int, "float", float):
            minimum = 0 if f.name in ("max_length", "max_concurrent", "max_queue", "drain_s") else 1
            if value < minimum:
                raise ConfigError(f"{flag_name(f.name)} / {env_name(f.name)} must be ≥ {minimum}, got {value}")
    d = s.device
    if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
        raise ConfigError(f"--device / WENMO_DEVICE: {d!r} is not valid; use {DEVICE_HINT}")
    return s
