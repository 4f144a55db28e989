"""Reading ModelScope checkpoint directories: JSON files, weights (.bin or .safetensors), tokenizers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from app.errors import ModelUnavailableError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_json(model_dir: Path, name: str, required: bool = True) -> dict[str, Any]:
    path = model_dir / name
    if not path.exists():
        if required:
            raise ModelUnavailableError(f"{model_dir}: {name} is missing; is this a complete model directory?")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelUnavailableError(f"{path}: cannot be read as JSON ({e})") from None


def load_state_dict(model_dir: Path) -> dict[str, Any]:
    """The checkpoint's tensors on the CPU, from safetensors when present, else pytorch_model.bin."""
    import torch

    for name in WEIGHT_FILES:
        path = model_dir / name
        if not path.exists():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu")
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a corrupt or truncated file, whatever the loader says
            raise ModelUnavailableError(f"{path}: cannot load the weights ({type(e).__name__}: {e})") from None
    raise ModelUnavailableError(f"{model_dir}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Drop `prefix` from keys that have it; keys without it are kept as they are."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_into(module, state: dict[str, Any], what: str, ignore: tuple[str, ...] = ()) -> None:  # noqa: ANN001
    """Load weights strictly: every parameter of `module` must come from the checkpoint."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise ModelUnavailableError(
            f"{what}: the checkpoint lacks {len(missing)} weights the model needs (first: {missing[:3]}); "
            "it is not a checkpoint of this model family"
        )
    unexpected = [k for k in result.unexpected_keys if not k.startswith(ignore) and not k.endswith("position_ids")]
    if unexpected:
        log.info("event=unused_weights model=%s count=%d first=%s", what, len(unexpected), unexpected[:3])


def load_tokenizer(model_dir: Path):  # noqa: ANN201
    """The fast BERT tokenizer (offsets need it) from vocab.txt and tokenizer_config.json."""
    from transformers import BertTokenizerFast

    if not (model_dir / "vocab.txt").exists() and not (model_dir / "tokenizer.json").exists():
        raise ModelUnavailableError(f"{model_dir}: vocab.txt is missing; is this a complete model directory?")
    tok = BertTokenizerFast.from_pretrained(str(model_dir))
    # Lengths are checked and cut by Wenmo itself (and flagged); silence the library's own length warning.
    tok.model_max_length = 1 << 30
    return tok
