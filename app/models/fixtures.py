"""Tiny random-weight checkpoints in exactly the real ModelScope repos' layouts.

Same file names, config keys and state-dict key names as the real repos, small sizes, and a small Chinese
character vocabulary. Used by the tests, by `serve --demo` and by `bench --size tiny`; `full=True` writes
full-size replicas (real architecture configs, random weights) for measuring speed and memory.

Default BERT initialisation (std 0.02) makes every input come out nearly the same vector, so tests could
not tell right from wrong; weights are drawn with a wider spread instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Frequent characters, plus those in the model cards' examples and the presets.
HANZI = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么"
    "心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分"
    "将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重"
    "被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住"
    "员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制"
    "解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非"
    "流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量"
    "空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委"
    "早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴照注送团议北京天安门上海"
    "西班牙巴塞罗那洋议会组织机构创始人物地理位置事件触发词胜负时间属性情感正向负向中立蕴含矛盾段落关系匹配相似"
    "阿里巴巴马云杭州腾讯深圳百度李彦宏苹果手机很好价格便宜质量服务态度差评论球队比赛获得冠军昨晚今天明天北大学"
    "合同甲方乙方金额签订日期公司成立于年月日号我们你们他们喜欢讨厌推荐电影音乐体育科技财经娱乐游戏汽车房产教育"
)
ASCII = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCT = list("，。！？、：；“”‘’（）《》【】—…·,.!?:;'\"()[]-_/#%&*+=@$")


def tiny_vocab() -> list[str]:
    seen: dict[str, None] = {}
    for ch in [*HANZI, *ASCII, *PUNCT]:
        seen.setdefault(ch, None)
    return SPECIAL + list(seen)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


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


def bert_sizes(full: bool, vocab_size: int) -> dict[str, Any]:
    if full:  # BERT-large, as in both real repos
        return {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                "intermediate_size": 4096, "vocab_size": 21128}
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "vocab_size": vocab_size}


def bert_config_dict(model_type: str, sizes: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
    cfg = {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": model_type, "pad_token_id": 0, "type_vocab_size": 2, **sizes,
    }
    cfg.update(extra or {})
    return cfg


def widen(module, seed: int, std: float = 0.25) -> None:  # noqa: ANN001
    """Redraw weights with a wider spread (see module docstring); LayerNorms stay at identity."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                continue
            p.copy_(torch.randn(p.shape, generator=gen) * (std if p.dim() > 1 else std / 5))


def _save(state: dict, root: Path, fmt: str) -> None:
    import torch

    state = {k: v.contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(root / "model.safetensors"))
    else:
        torch.save(state, root / "pytorch_model.bin")


def build_gte(root: Path, *, full: bool = False, seed: int = 1, prefix: str = "bert.", fmt: str = "bin",
              pooler: str = "cls", max_length: int = 512) -> Path:
    """iic/nlp_gte_sentence-embedding_chinese-large layout. `max_length` is configuration.json's limit (the
    position table stays at 512), so tests can tell which of the two the adapter reads."""
    import torch
    from transformers import BertConfig, BertModel

    root.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    cfg = bert_config_dict("bert", bert_sizes(full, len(vocab)), {"architectures": ["BertModel"]})
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


def build_structbert(root: Path, *, full: bool = False, seed: int = 2, fmt: str = "bin", max_length: int = 512) -> Path:
    """iic/nlp_structbert_sentence-similarity_chinese-large layout (`model_type: structbert`); `max_length` as
    in build_gte."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    cfg = bert_config_dict("structbert", bert_sizes(full, len(vocab)), {
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
    out = {
        "embed": build_gte(root / "gte", full=full),
        "cross": build_structbert(root / "structbert", full=full),
    }
    try:
        from app.models.uninlu.fixture import build_rex_uninlu
    except ImportError:  # the NLU family is optional until it is built
        return out
    out["nlu"] = build_rex_uninlu(root / "rex-uninlu", full=full)
    return out
