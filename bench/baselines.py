"""The two baselines Wenmo is compared against, written the way the guides and the libraries do it.

- naive: fp32, one input per forward, padded to the model maximum (`padding="max_length"`), `no_grad` —
  where typical deployment guides start.
- library: plain transformers (`BertModel` / `BertForSequenceClassification.from_pretrained` + the
  checkpoint's tokenizer), inputs sorted by character length (as sentence-transformers' `encode` does),
  fixed-size batches padded to their longest member (`padding=True`), fp32, `no_grad`.

Both pool and score exactly as Wenmo does (same pooler, same positive label), so the bench can check
that every configuration computes the same outputs. Runs inside a measurement subprocess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.models.checkpoint import read_json
from app.models.cross_encoder import positive_label
from app.models.embedding import pool, pooler_type
from app.models.encoding import model_max_length
from bench.timing import BatchRecord, TimedForward


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _fp32():  # noqa: ANN202 - transformers 5 loads in the checkpoint's dtype unless told; baselines are fp32
    import torch

    return torch.float32


def _max_length(model_dir: Path) -> int:
    return model_max_length(model_dir, read_json(model_dir, "config.json"))


class _Base:
    def __init__(self, model_dir: Path, device: str, records: list[BatchRecord], batch_size: int) -> None:
        _quiet_transformers()
        from transformers import AutoTokenizer

        self.model_dir = model_dir
        self.device = device
        self.records = records
        self.batch_size = batch_size
        self.max_length = _max_length(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def _finish(self, module: Any) -> None:
        module.eval()
        module.to(self.device)
        self.model = TimedForward(module, self.device, self.records)

    def _padding(self) -> dict[str, Any]:
        if self.batch_size == 1:  # naive
            return {"padding": "max_length", "truncation": True, "max_length": self.max_length}
        return {"padding": True, "truncation": True, "max_length": self.max_length}


class EmbeddingBaseline(_Base):
    """GTE through plain transformers: `batch_size=1` is the naive baseline, >1 the library baseline."""

    def __init__(self, model_dir: Path, device: str, records: list[BatchRecord], batch_size: int) -> None:
        super().__init__(model_dir, device, records, batch_size)
        from transformers import BertModel

        self.pooler = pooler_type(model_dir)
        self._finish(BertModel.from_pretrained(str(model_dir), add_pooling_layer=False, dtype=_fp32()))

    def run(self, texts: Sequence[str]) -> list[list[float]]:
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if self.batch_size > 1 else list(
            range(len(texts)))
        out: list[Any] = [None] * len(texts)
        need_states = self.pooler in ("avg_top2", "avg_first_last")
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", **self._padding()).to(self.device)
            with torch.no_grad():
                res = self.model(**enc, output_hidden_states=need_states)
                vec = pool(self.pooler, res.last_hidden_state, res.hidden_states, enc["attention_mask"])
                vec = torch.nn.functional.normalize(vec.float(), p=2, dim=-1).cpu()
            for row, i in enumerate(idx):
                out[i] = vec[row].tolist()
        return out


class CrossEncoderBaseline(_Base):
    """StructBERT through plain transformers; `batch_size` as for EmbeddingBaseline."""

    def __init__(self, model_dir: Path, device: str, records: list[BatchRecord], batch_size: int) -> None:
        super().__init__(model_dir, device, records, batch_size)
        from transformers import BertForSequenceClassification

        self.positive = positive_label(read_json(model_dir, "config.json"), str(model_dir))
        self._finish(BertForSequenceClassification.from_pretrained(str(model_dir), dtype=_fp32()))

    def run(self, first: Sequence[str], second: Sequence[str]) -> list[float]:
        import torch

        n = len(first)
        order = (sorted(range(n), key=lambda i: -(len(first[i]) + len(second[i]))) if self.batch_size > 1
                 else list(range(n)))
        out: list[float] = [0.0] * n
        kw = self._padding()
        kw["truncation"] = "longest_first"
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([first[i] for i in idx], [second[i] for i in idx], return_tensors="pt", **kw)
            enc = enc.to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
                probs = torch.softmax(logits, dim=-1)[:, self.positive].cpu().tolist()
            for row, i in enumerate(idx):
                out[i] = float(probs[row])
        return out
