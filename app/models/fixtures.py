"""Tiny random-weight checkpoints in exactly the real ModelScope repos' layouts.

Same file names, config keys and state-dict key names as the real repos, small sizes, and a small Chinese
character vocabulary. Used by the tests, by `serve --demo` and by `bench --size tiny`; `full=True` writes
full-size replicas (real architecture configs, random weights) for measuring speed and memory.

Default BERT initialisation (std 0.02) makes every input come out nearly the same vector, so tests could
not tell right from wrong; weights are drawn with a wider spread instead.

The RexUniNLU checkpoint is app/models/uninlu/fixture.py's; what both builders share is in fixture_parts.py,
so the family's module never imports this one. torch and transformers are imported inside the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.models.checkpoint import load_state_dict
from app.models.fixture_parts import ASCII, HANZI, PUNCT, widen, write_json
from app.models.uninlu.fixture import build_rex_uninlu

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab() -> list[str]:
    seen: dict[str, None] = {}
    for ch in [*HANZI, *ASCII, *PUNCT]:
        seen.setdefault(ch, None)
    return SPECIAL + list(seen)


def write_bert_tokenizer(root: Path, vocab: list[str], max_length: int) -> None:
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    write_json(root / "tokenizer_config.json", {
        "do_lower_case": True, "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer",
        "model_max_length": max_length, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]",
    })
    write_json(root / "special_tokens_map.json", {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    })


def bert_sizes(full: bool, vocab_size: int, feed_forward: int | None = None) -> dict[str, Any]:
    if full:  # BERT-large, as in both real repos
        return {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                "intermediate_size": 4096, "vocab_size": 21128}
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": feed_forward or 64, "vocab_size": vocab_size}


def bert_config_dict(model_type: str, sizes: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
    cfg = {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": model_type, "pad_token_id": 0, "type_vocab_size": 2, **sizes,
    }
    cfg.update(extra or {})
    return cfg


def _save(state: dict, root: Path, fmt: str) -> None:
    import torch

    state = {k: v.contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(root / "model.safetensors"))
    else:
        torch.save(state, root / "pytorch_model.bin")


def build_gte(root: Path, *, full: bool = False, seed: int = 1, prefix: str = "bert.", fmt: str = "bin",
              pooler: str = "cls", max_length: int = 512, feed_forward: int | None = None) -> Path:
    """iic/nlp_gte_sentence-embedding_chinese-large layout. `max_length` is configuration.json's limit (the
    position table stays at 512), so tests can tell which of the two the adapter reads. `feed_forward` sets the
    intermediate size (the tiny default is 2 × hidden; DeepSpeed's BERT kernels need the real models' 4 ×)."""
    import torch
    from transformers import BertConfig, BertModel

    root.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    cfg = bert_config_dict("bert", bert_sizes(full, len(vocab), feed_forward), {"architectures": ["BertModel"]})
    write_json(root / "config.json", cfg)
    write_json(root / "configuration.json", {
        "framework": "pytorch", "task": "sentence-embedding",
        "model": {"type": "bert", "emb_pooler_type": pooler},
        "pipeline": {"type": "sentence-embedding"},
        "preprocessor": {"type": "sentence-embedding", "max_length": max_length},
    })
    write_bert_tokenizer(root, vocab if not full else _full_vocab(vocab, cfg["vocab_size"]), 512)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**{k: v for k, v in cfg.items() if k != "model_type"}), add_pooling_layer=False)
    if not full:
        widen(model, seed)
    _save({prefix + k: v for k, v in model.state_dict().items()}, root, fmt)
    return root


def build_structbert(root: Path, *, full: bool = False, seed: int = 2, fmt: str = "bin", max_length: int = 512,
                     feed_forward: int | None = None) -> Path:
    """iic/nlp_structbert_sentence-similarity_chinese-large layout (`model_type: structbert`); `max_length` and
    `feed_forward` as in build_gte."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    cfg = bert_config_dict("structbert", bert_sizes(full, len(vocab), feed_forward), {
        "architectures": ["SbertForSequenceClassification"],
        "id2label": {"0": "0", "1": "1"}, "label2id": {"0": 0, "1": 1},
    })
    write_json(root / "config.json", cfg)
    write_json(root / "configuration.json", {
        "framework": "pytorch", "task": "sentence-similarity",
        "model": {"type": "structbert"},
        "pipeline": {"type": "sentence-similarity"},
        "preprocessor": {"type": "sen-sim-tokenizer", "first_sequence": "first_sequence",
                         "second_sequence": "second_sequence", "max_length": max_length},
    })
    write_bert_tokenizer(root, vocab if not full else _full_vocab(vocab, cfg["vocab_size"]), 512)
    torch.manual_seed(seed)
    hf = {k: v for k, v in cfg.items() if k not in ("model_type", "id2label", "label2id")}
    model = BertForSequenceClassification(BertConfig(**hf, num_labels=2))
    if not full:
        widen(model, seed)
    _save(model.state_dict(), root, fmt)
    return root


def _full_vocab(vocab: list[str], size: int) -> list[str]:
    """Pad the tiny vocabulary with unused slots so the full-size replica has the real vocab size."""
    return vocab + [f"[unused{i}]" for i in range(size - len(vocab))]


def build_all(root: Path, *, full: bool = False) -> dict[str, Path]:
    """Every family's checkpoint under `root`; returns role → directory."""
    return {
        "embed": build_gte(root / "gte", full=full),
        "cross": build_structbert(root / "structbert", full=full),
        "nlu": build_rex_uninlu(root / "rex-uninlu", full=full),
    }


def build_perturbed(source: Path, target: Path, *, seed: int = 7, scale: float = 0.5) -> Path:
    """A copy of the checkpoint at `source` with gaussian noise (std `scale`) added to every floating-point weight:
    the same layout, tokenizer and role, measurably different outputs. Stands in for a tuned checkpoint where the
    test is about serving one (a swap), not about tuning."""
    import shutil

    import torch

    shutil.copytree(source, target)
    gen = torch.Generator().manual_seed(seed)
    state = {k: v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype) if v.is_floating_point() else v
             for k, v in load_state_dict(source).items()}
    fmt = "safetensors" if (target / "model.safetensors").exists() else "bin"
    (target / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")).unlink()
    _save(state, target, fmt)
    return target
