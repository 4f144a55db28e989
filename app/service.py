"""The service layer: validation and limits, then calls into the model adapters under the concurrency cap.

Every surface (CLI, UI, HTTP API) calls these functions, so a limit or a message is defined once.
No torch and no gradio here: adapters are passed in, and results are plain Python/numpy values.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from app.config import Settings
from app.engine.cancellation import CancelToken, work_scope
from app.engine.heap import HeapTrimmer
from app.engine.limiter import ConcurrencyLimiter
from app.errors import InputError, ModelUnavailableError

log = logging.getLogger(__name__)


class Embedder(Protocol):
    info: Any
    dimension: int

    def embed(self, texts: Sequence[str], *, normalize: bool, max_batch_tokens: int,
              max_batch_size: int) -> Any: ...


class CrossEncoder(Protocol):
    info: Any

    def score(self, first: Sequence[str], second: Sequence[str], *, max_batch_tokens: int,
              max_batch_size: int) -> Any: ...


class Nlu(Protocol):
    info: Any

    def infer(self, text: str, schema: Any, task: str | None = None, *, max_batch_tokens: int,
              max_batch_size: int, max_forwards: int, max_paths: int) -> dict: ...


@dataclass
class Embeddings:
    vectors: np.ndarray
    truncated: list[bool]
    token_counts: list[int]
    elapsed_s: float

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


@dataclass
class EngineTime:
    """Filled in by a service call when the caller passes one: seconds the call spent in the models —
    tokenization, forward passes, pooling — measured inside the concurrency slot, so waiting for the slot
    is not in it (nor is anything the caller does before or after: parsing, serializing)."""

    seconds: float = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[EngineTime]:
        start = time.perf_counter()
        yield self
        self.seconds = time.perf_counter() - start


@dataclass
class Stats:
    """Counters the status page and /metrics read."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # (time, operation, message)

    def record_error(self, operation: str, message: str) -> None:
        self.errors.append((time.time(), operation, message))
        del self.errors[:-50]


class Service:
    def __init__(self, settings: Settings, *, embedder: Embedder | None = None,
                 cross_encoder: CrossEncoder | None = None, nlu: Nlu | None = None,
                 limiter: ConcurrencyLimiter | None = None, request_timeout_s: float | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.cross_encoder = cross_encoder
        self.nlu_model = nlu
        # The CLI runs one call at a time; servers pass their own, smaller, shared limiter.
        self.limiter = limiter or ConcurrencyLimiter(max_concurrent=1, max_queue=1 << 30)
        # Servers stop a request at its deadline; the CLI has none (one call may vectorise a whole corpus).
        self.request_timeout_s = request_timeout_s
        self.heap = HeapTrimmer()
        self.stats = Stats()

    # ---- validation -------------------------------------------------------------------------------
    def check_texts(self, texts: Any, what: str = "texts") -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise InputError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
        if not texts:
            raise InputError(f"{what} is empty (输入为空); give at least one text")
        s = self.settings
        if len(texts) > s.max_texts:
            raise InputError(
                f"{what}: {len(texts)} texts in one call, the limit is {s.max_texts} (WENMO_MAX_TEXTS); "
                "split the input into several calls"
            )
        blank: list[int] = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"{what}[{i}] must be a string, got {type(t).__name__}")
            if not t.strip():
                blank.append(i)
            elif len(t) > s.max_chars:
                raise InputError(
                    f"{what}[{i}] has {len(t)} characters, the limit is {s.max_chars} (WENMO_MAX_CHARS); "
                    "shorten or split it"
                )
        if blank:
            shown = ", ".join(map(str, blank[:10]))
            raise InputError(f"{what}: item(s) {shown} are empty or whitespace (第 {shown} 项为空); remove them")
        return list(texts)

    @contextlib.contextmanager
    def _work(self, timing: EngineTime, cancel: CancelToken | None) -> Iterator[None]:
        """One inference: a slot under the cap, then the request's deadline (from the moment the slot is
        held) and its cancellation token for the engine's checkpoints, and the engine-time measurement."""
        try:
            with self.limiter.slot(cancel), work_scope(cancel, self.request_timeout_s), timing.measure():
                yield
        finally:
            self.heap.maybe_trim()  # outside the slot: the next request does not wait for it

    def _need(self, model: Any, role: str) -> Any:
        if model is None:
            raise ModelUnavailableError(f"the {role} model is not loaded in this process; start it with one")
        return model

    # ---- operations --------------------------------------------------------------------------------
    def embed(self, texts: Any, *, normalize: bool = True, timing: EngineTime | None = None,
              cancel: CancelToken | None = None) -> Embeddings:
        texts = self.check_texts(texts)
        embedder = self._need(self.embedder, "embedding")
        s = self.settings
        timing = EngineTime() if timing is None else timing
        with self._work(timing, cancel):
            r = embedder.embed(texts, normalize=normalize, max_batch_tokens=s.max_batch_tokens,
                               max_batch_size=s.max_batch_size)
        return Embeddings(r.vectors, list(r.truncated), list(r.token_counts), timing.seconds)

    def similarity(self, source: Any, candidates: Any, *, rerank: bool = False,
                   timing: EngineTime | None = None, cancel: CancelToken | None = None) -> dict[str, Any]:
        """Cosine of each candidate to the source (GTE), and the cross-encoder probability when asked;
        results sorted best first (by cross_score when reranked, else cosine)."""
        if not isinstance(source, str) or not source.strip():
            raise InputError("source must be a non-empty text (源文本为空)")
        candidates = self.check_texts(candidates, "candidates")
        self.check_texts([source], "source")
        embedder = self._need(self.embedder, "embedding")
        cross = self._need(self.cross_encoder, "cross-encoder") if rerank else None
        s = self.settings
        timing = EngineTime() if timing is None else timing
        with self._work(timing, cancel):
            r = embedder.embed([source, *candidates], normalize=True, max_batch_tokens=s.max_batch_tokens,
                               max_batch_size=s.max_batch_size)
            cosines = (r.vectors[1:] @ r.vectors[0]).astype(float)
            cross_scores: list[float | None] = [None] * len(candidates)
            cross_trunc = [False] * len(candidates)
            if cross is not None:
                pairs = cross.score([source] * len(candidates), candidates, max_batch_tokens=s.max_batch_tokens,
                                    max_batch_size=s.max_batch_size)
                cross_scores = list(pairs.scores)
                cross_trunc = list(pairs.truncated)
        results = [
            {
                "index": i,
                "text": text,
                "cosine": float(cosines[i]),
                "cross_score": cross_scores[i],
                "truncated": bool(r.truncated[i + 1] or cross_trunc[i]),
            }
            for i, text in enumerate(candidates)
        ]
        key = "cross_score" if cross is not None else "cosine"
        results.sort(key=lambda x: (-x[key], x["index"]))
        return {
            "source": source,
            "source_truncated": bool(r.truncated[0]),
            "reranked": cross is not None,
            "results": results,
            "elapsed_s": timing.seconds,
        }

    def pairwise(self, texts: Any, *, max_texts: int = 50) -> dict[str, Any]:
        """Cosine matrix for a small set (the UI's heatmap)."""
        texts = self.check_texts(texts)
        if len(texts) > max_texts:
            raise InputError(f"pairwise matrix: {len(texts)} texts, at most {max_texts}; give fewer texts")
        e = self.embed(texts)
        return {"texts": texts, "matrix": (e.vectors @ e.vectors.T).astype(float).tolist()}

    def nlu(self, text: Any, schema: Any, task: str | None = None, *,
            timing: EngineTime | None = None, cancel: CancelToken | None = None) -> dict[str, Any]:
        """RexUniNLU on one text. Its work is bounded by the NLU budgets (BudgetExceededError, 422) and, like
        every call, by the request deadline and the client's cancellation."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        (text,) = self.check_texts([text], "text")
        model = self._need(self.nlu_model, "NLU")
        s = self.settings
        timing = EngineTime() if timing is None else timing
        with self._work(timing, cancel):
            return model.infer(text, schema, task, max_batch_tokens=s.max_batch_tokens,
                               max_batch_size=min(s.max_batch_size, 32), max_forwards=s.nlu_max_forwards,
                               max_paths=s.nlu_max_paths)

    def models(self) -> list[dict[str, Any]]:
        return [m.info.as_dict() for m in (self.embedder, self.cross_encoder, self.nlu_model) if m is not None]
