"""A random-weight RexUniNLU checkpoint in exactly the real repo's layout (iic/nlp_deberta_rex-uninlu_chinese-base).

Files: config.json (the real keys), configuration.json, vocab.txt ([PAD]=0, [CLS]=1, [SEP]=2, [UNK], [MASK],
then Chinese characters, ASCII with `##` continuations, punctuation — every character of the presets
included), tokenizer_config.json, special_tokens_map.json and pytorch_model.bin or model.safetensors with
keys under `plm.` plus `ffnq.*`, `ffnk.*`, `rotary_emb.freqs`; the word embeddings have V + 4 rows.

Tiny by default (hidden 32, 2 layers, 4 heads); `full=True` writes the real base sizes (768/12/12/3072,
vocab 12800) for speed and memory measurements. Tiny weights are drawn with a wider spread so that random
logits are sometimes > 0 and decoding finds spans. `write_rex_tokenizer` needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.models.fixture_parts import ASCII, HANZI, PUNCT, widen, write_json
from app.models.uninlu.presets import preset_characters

REX_SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
# Characters the tests and the README examples use beyond the presets.
EXTRA = "北大西洋议会春季会议日在西班牙巴塞罗那闭幕张三李四王五创办了公司阿里巴巴腾讯马化腾杭州深圳"
FULL_VOCAB = 12800
HEAD_OFFSET = 0.9
HEAD_SCALE = 0.2


def rex_vocab() -> list[str]:
    seen: dict[str, None] = {}
    for ch in [*HANZI, *EXTRA, *preset_characters(), *ASCII, *PUNCT]:
        ch = ch.lower()
        if ch.strip():
            seen.setdefault(ch, None)
    words = list(seen)
    # Latin letters and digits inside a word are `##` continuations for WordPiece.
    cont = [f"##{c}" for c in ASCII]
    return REX_SPECIAL + words + cont


def write_rex_tokenizer(root: Path, vocab: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    write_json(root / "tokenizer_config.json", {
        "do_lower_case": True, "tokenize_chinese_chars": True, "strip_accents": None,
        "tokenizer_class": "BertTokenizer", "model_max_length": 512, "unk_token": "[UNK]", "sep_token": "[SEP]",
        "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    })
    write_json(root / "special_tokens_map.json", {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    })


def rex_config(full: bool, vocab_size: int) -> dict[str, Any]:
    sizes = ({"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
             if full else
             {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64})
    return {
        "model_type": "deberta-v2",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        **sizes,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-7,
        "max_position_embeddings": 512,
        "max_relative_positions": -1,
        "position_buckets": 256,
        "position_biased_input": False,
        "relative_attention": True,
        "pos_att_type": ["c2p", "p2c"],
        "share_att_key": True,
        "norm_rel_ebd": "layer_norm",
        "conv_kernel_size": 3,
        "conv_act": "gelu",
        "pad_token_id": 0,
        "type_vocab_size": 0,
        "vocab_size": vocab_size,
    }


def build_rex_uninlu(root: Path, *, full: bool = False, seed: int = 3, fmt: str = "bin") -> Path:
    import torch

    # deferred: backbone and head pull torch; the vocabulary and tokenizer files are written without it
    from app.models.uninlu.backbone import deberta_config
    from app.models.uninlu.head import RexUniNluModel

    if fmt not in ("bin", "safetensors"):
        raise ValueError(f"fmt must be bin or safetensors, got {fmt!r}")
    root.mkdir(parents=True, exist_ok=True)
    vocab = rex_vocab()
    if full:
        vocab = vocab + [f"[unused{i}]" for i in range(FULL_VOCAB - len(vocab))]
    config = rex_config(full, len(vocab))
    write_json(root / "config.json", config)
    write_json(root / "configuration.json", {
        "framework": "pytorch", "task": "rex-uninlu",
        "model": {"type": "rex-uninlu"},
        "pipeline": {"type": "rex-uninlu"},
        "allow_remote": True,
    })
    write_rex_tokenizer(root, vocab)
    torch.manual_seed(seed)
    model = RexUniNluModel(deberta_config(config, len(vocab) + 4))
    if not full:
        widen(model, seed)
        # Widened random weights put about half of all cells above 0, and a span needs three of them: far
        # too many spans to reason about. Opposite biases on the slowest RoPE dimensions (their angles barely
        # move over 512 positions) shift every logit down by about 8·c², leaving under a third on. Then q and
        # k are scaled down together: the signs (what decoding reads) stay, the logits shrink to a few units
        # so float32 rounding differences stay far below the 1e-5 the batching tests allow.
        with torch.no_grad():
            model.ffnq.bias[-8:] += HEAD_OFFSET
            model.ffnk.bias[-8:] -= HEAD_OFFSET
            for head in (model.ffnq, model.ffnk):
                head.weight.mul_(HEAD_SCALE)
                head.bias.mul_(HEAD_SCALE)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(root / "model.safetensors"))
    else:
        torch.save(state, root / "pytorch_model.bin")
    return root
