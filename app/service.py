"""The service layer: validation and limits, then calls into the models, whose work goes through the engine's
queues (app/engine/workqueue.py). The concurrency cap here is admission: a request holds a slot while its work is
in the engine, where it shares forwards with the other admitted requests.

Every surface (CLI, UI, HTTP API) calls these functions, so a limit or a message is defined once, and gets back
typed results (frozen dataclasses below) that carry the names of the models that made them and the vector size:
no surface reaches into an adapter. `models()` and `describe()` say what is loaded.
Imports nothing from app/models, app/web, torch or gradio: adapters are passed in (the Protocols below say what
the service needs of them), and results are plain Python/numpy values.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from app.checkpoints import TUNED, CheckpointPolicy
from app.config import Settings
from app.engine.cancellation import CancelToken, Progress, work_scope
from app.engine.heap import HeapTrimmer
from app.engine.limiter import ConcurrencyLimiter
from app.engine.scheduler import free_cache
from app.engine.workqueue import WorkQueue
from app.errors import ConflictError, InputError, ModelUnavailableError

log = logging.getLogger(__name__)

M = TypeVar("M")


class ModelFacts(Protocol):
    """What an adapter's `info` says about its model (app/models/encoding.ModelInfo has these fields; the service
    reads them by name, so it needs nothing from app/models)."""

    @property
    def family(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def max_length(self) -> int: ...
    @property
    def dimension(self) -> int | None: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def engine(self) -> str: ...


class EmbedOutput(Protocol):
    @property
    def vectors(self) -> np.ndarray: ...  # (n, dimension) float32, input order
    @property
    def truncated(self) -> Sequence[bool]: ...
    @property
    def token_counts(self) -> Sequence[int]: ...


class ScoreOutput(Protocol):
    @property
    def scores(self) -> Sequence[float]: ...
    @property
    def truncated(self) -> Sequence[bool]: ...


class Embedder(Protocol):
    info: ModelFacts
    queue: WorkQueue
    dimension: int

    def embed(self, texts: Sequence[str], *, normalize: bool) -> EmbedOutput: ...


class CrossEncoder(Protocol):
    info: ModelFacts
    queue: WorkQueue

    def score(self, first: Sequence[str], second: Sequence[str]) -> ScoreOutput: ...


class Nlu(Protocol):
    info: ModelFacts
    queue: WorkQueue

    def infer(self, text: str, schema: Any, task: str | None = None, *, max_forwards: int,
              max_paths: int) -> dict[str, Any]: ...


# ---- results: what every surface gets back; each carries the names of the models that made it -------------
# Results that hold arrays compare by identity (eq=False): `==` on arrays is elementwise, not a truth value.
@dataclass(frozen=True, eq=False)
class Embeddings:
    vectors: np.ndarray = field(repr=False)  # (n, dimension) float32, in input order
    truncated: tuple[bool, ...]
    token_counts: tuple[int, ...]
    elapsed_s: float
    model: str  # the embedding model's name
    dimension: int


@dataclass(frozen=True)
class SimilarityHit:
    index: int  # the candidate's position in the input
    text: str
    cosine: float
    cross_score: float | None  # the cross-encoder's P(similar), when reranked
    truncated: bool  # the candidate (or its pair with the source) was cut to the model's maximum length

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON of one result (README: `similarity`)."""
        return {"index": self.index, "text": self.text, "cosine": self.cosine, "cross_score": self.cross_score,
                "truncated": self.truncated}


@dataclass(frozen=True, eq=False)
class SimilarityResult:
    source: str
    source_truncated: bool
    reranked: bool
    results: tuple[SimilarityHit, ...]  # best first: by cross_score when reranked, else by cosine
    elapsed_s: float
    model: str  # the embedding model's name
    cross_model: str | None  # the cross-encoder's name, when reranked
    dimension: int
    # Unit vectors of the source (row 0) and the candidates in input order (row 1 + index): a caller draws the
    # pairwise matrix from them instead of embedding the same texts again.
    vectors: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The fields every surface shows, in the documented order; the HTTP API adds its own after them."""
        return {"source": self.source, "source_truncated": self.source_truncated, "reranked": self.reranked,
                "results": [hit.as_dict() for hit in self.results]}

    @property
    def texts(self) -> list[str]:
        """Source, then the candidates in input order: the rows of `vectors`."""
        return [self.source, *(hit.text for hit in sorted(self.results, key=lambda h: h.index))]

    def pairwise_matrix(self) -> list[list[float]]:
        """Cosine of every text (`texts`) with every other, from the vectors already computed."""
        return (self.vectors @ self.vectors.T).astype(float).tolist()


@dataclass(frozen=True)
class PairwiseResult:
    texts: list[str]
    matrix: list[list[float]]  # cosines, texts × texts
    model: str
    elapsed_s: float


@dataclass(frozen=True)
class NluResult:
    task: str  # the task that ran: extract, classify or multi_classify
    output: list[list[dict[str, Any]]]  # paths of {type, span, offset: [start, end], score}, ancestors first
    truncated: bool
    model: str
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON (README: `nlu`); the HTTP API adds `model`."""
        return {"task": self.task, "output": self.output, "truncated": self.truncated}


ROLES = ("embed", "cross", "nlu")  # the composition root's names for the three models
_ATTRIBUTES = {"embed": "embedder", "cross": "cross_encoder", "nlu": "nlu_model"}  # the Service's attribute per role
# Loads `role`'s adapter from a checkpoint directory under `name`, on the role's existing queue (the composition
# root's `load_adapter` with the process's plan and settings).
ModelLoader = Callable[[str, Any, str, WorkQueue], Any]
# What a swap runs on the new model before it serves (first-call costs: allocator, kernels, caches).
WARM_UP_TEXTS = ("预热：加载后的第一次计算", "warm-up")
WARM_UP_SCHEMA = {"人物": None}
SWAP_RELEASE_WAIT_S = 600.0  # longest a swap waits for the old model's last requests before it stops waiting


@dataclass(frozen=True)
class ServingCheckpoint:
    """What serves a role now (GET /v1/models, the status tab, the footer, /metrics)."""

    role: str
    name: str  # the model's name in answers: the configured id, or `tuned/<directory>`
    path: str  # the checkpoint directory
    loaded_at: float  # epoch seconds
    previous: str | None  # the directory served before it: what a rollback goes back to
    original: str  # the directory the role was started with

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "path": self.path, "loaded_at": self.loaded_at,
                "previous": self.previous, "original": self.original, "tuned": self.path != self.original}


def similarity_work(candidates: int, rerank: bool) -> int:
    """The work items a similarity call reports to its progress callback: the source and every candidate
    embedded, then every (source, candidate) pair scored when reranking."""
    return 1 + candidates + (candidates if rerank else 0)


@dataclass(frozen=True)
class EngineQueueStats:
    across_requests: bool  # batch_across_requests: forwards formed from every waiting request's items
    waiting: int  # requests with items queued or in the running forward
    forwards: int
    items: int  # texts, pairs or NLU windows run
    shared_forwards: int  # forwards that held items of more than one request
    padded_lengths: int  # distinct lengths those forwards were padded to (app/engine/shapes.py bounds them)


@dataclass(frozen=True)
class ModelDescription:
    """One loaded model, as the status page and the footer show it."""

    role: str  # one of ROLES
    family: str
    name: str
    path: str
    max_length: int
    dimension: int | None  # vector size (embedding model only)
    device: str
    dtype: str
    engine: str


@dataclass(frozen=True)
class Capabilities:
    """What this service can do: the models it holds, by role."""

    models: tuple[ModelDescription, ...]

    def model(self, role: str) -> ModelDescription | None:
        return next((m for m in self.models if m.role == role), None)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(m.role for m in self.models)

    @property
    def dimension(self) -> int | None:
        """The embedding model's vector size; None without one."""
        embed = self.model("embed")
        return None if embed is None else embed.dimension

    @property
    def device(self) -> str | None:
        return self.models[0].device if self.models else None


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
                 limiter: ConcurrencyLimiter | None = None, request_timeout_s: float | None = None,
                 loader: ModelLoader | None = None, checkpoints: CheckpointPolicy | None = None) -> None:
        self.settings = settings
        # The adapters are the service's own: surfaces read what they need from the typed results, `models()`
        # and `describe()` (tests/unit/test_surface_boundary.py keeps it so).
        self.embedder: Embedder | None = embedder
        self.cross_encoder: CrossEncoder | None = cross_encoder
        self.nlu_model: Nlu | None = nlu
        # The CLI runs one call at a time; servers pass their own, smaller, shared limiter.
        self.limiter = limiter or ConcurrencyLimiter(max_concurrent=1, max_queue=1 << 30)
        # Servers stop a request at its deadline; the CLI has none (one call may vectorise a whole corpus).
        self.request_timeout_s = request_timeout_s
        self.heap = HeapTrimmer()
        self.stats = Stats()
        # Swapping a role's checkpoint while serving (`serve_checkpoint`): servers pass both; one swap at a time.
        self.loader = loader
        self.checkpoints = checkpoints
        self._swap_lock = threading.Lock()
        self._original_names = {role: m.info.name for role, m in self._loaded()}
        # Paths resolved (links followed), as CheckpointPolicy.resolve returns them, so "is it the original" is `==`.
        self._serving = {role: ServingCheckpoint(role, m.info.name, os.path.realpath(m.info.path), time.time(), None,
                                                 os.path.realpath(m.info.path)) for role, m in self._loaded()}

    # ---- validation -------------------------------------------------------------------------------
    def check_texts(self, texts: Any, what: str = "texts") -> list[str]:
        """A list of texts (items named by their 0-based index, as in the JSON array they came in), or one string,
        named by `what` alone: "text is empty", never "item 0"."""
        single = isinstance(texts, str)
        if single:
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
                name = what if single else f"{what}[{i}]"
                raise InputError(
                    f"{name} has {len(t)} characters, the limit is {s.max_chars} (WENMO_MAX_CHARS); shorten or split it"
                )
        if blank and single:
            raise InputError(f"{what} is empty or whitespace (文本为空); give a text")
        if blank:
            shown = ", ".join(map(str, blank[:10]))
            raise InputError(f"{what}: item(s) {shown} are empty or whitespace (第 {shown} 项为空); remove them")
        return list(texts)

    @contextlib.contextmanager
    def _work(self, timing: EngineTime, cancel: CancelToken | None, progress: Progress | None = None) -> Iterator[None]:
        """One inference: a slot under the cap, then the request's deadline (from the moment the slot is
        held), its cancellation token for the engine's checkpoints and its progress callback, and the
        engine-time measurement."""
        try:
            with self.limiter.slot(cancel), work_scope(cancel, self.request_timeout_s, progress), timing.measure():
                yield
        finally:
            self.heap.maybe_trim()  # outside the slot: the next request does not wait for it

    def _need(self, model: M | None, role: str) -> M:
        if model is None:
            raise ModelUnavailableError(f"the {role} model is not loaded in this process; start it with one")
        return model

    # ---- operations --------------------------------------------------------------------------------
    def embed(self, texts: Any, *, normalize: bool = True, timing: EngineTime | None = None,
              cancel: CancelToken | None = None, progress: Progress | None = None) -> Embeddings:
        """`progress(n)`: n more texts were embedded (the CLI's progress bar; len(texts) in all)."""
        texts = self.check_texts(texts)
        embedder = self._need(self.embedder, "embedding")
        timing = EngineTime() if timing is None else timing
        with self._work(timing, cancel, progress):
            r = embedder.embed(texts, normalize=normalize)
        return Embeddings(r.vectors, tuple(map(bool, r.truncated)), tuple(map(int, r.token_counts)), timing.seconds,
                          model=embedder.info.name, dimension=int(r.vectors.shape[1]))

    def similarity(self, source: Any, candidates: Any, *, rerank: bool = False,
                   timing: EngineTime | None = None, cancel: CancelToken | None = None,
                   progress: Progress | None = None) -> SimilarityResult:
        """Cosine of each candidate to the source (GTE), and the cross-encoder probability when asked;
        results sorted best first (by cross_score when reranked, else cosine). One embedding pass: the
        result keeps the unit vectors, so the pairwise matrix needs no second one. `progress(n)`: n more texts
        embedded or pairs scored (`similarity_work` of them in all)."""
        if not isinstance(source, str) or not source.strip():
            raise InputError("source must be a non-empty text (源文本为空)")
        candidates = self.check_texts(candidates, "candidates")
        self.check_texts(source, "source")
        embedder = self._need(self.embedder, "embedding")
        cross = self._need(self.cross_encoder, "cross-encoder") if rerank else None
        timing = EngineTime() if timing is None else timing
        with self._work(timing, cancel, progress):
            r = embedder.embed([source, *candidates], normalize=True)
            cosines = (r.vectors[1:] @ r.vectors[0]).astype(float)
            cross_scores: list[float | None] = [None] * len(candidates)
            cross_trunc = [False] * len(candidates)
            if cross is not None:
                pairs = cross.score([source] * len(candidates), candidates)
                cross_scores = [float(x) for x in pairs.scores]
                cross_trunc = list(pairs.truncated)
        hits = [
            SimilarityHit(index=i, text=text, cosine=float(cosines[i]), cross_score=cross_scores[i],
                          truncated=bool(r.truncated[i + 1] or cross_trunc[i]))
            for i, text in enumerate(candidates)
        ]
        # Reranked: every hit has a cross_score, the order's key; else none has, and the cosine is.
        hits.sort(key=lambda h: (-(h.cosine if h.cross_score is None else h.cross_score), h.index))
        return SimilarityResult(
            source=source, source_truncated=bool(r.truncated[0]), reranked=cross is not None, results=tuple(hits),
            elapsed_s=timing.seconds, model=embedder.info.name,
            cross_model=None if cross is None else cross.info.name, dimension=int(r.vectors.shape[1]),
            vectors=r.vectors,
        )

    def pairwise(self, texts: Any, *, max_texts: int = 50) -> PairwiseResult:
        """Cosine matrix for a small set (the similarity tab draws its heatmap from `SimilarityResult` instead)."""
        texts = self.check_texts(texts)
        if len(texts) > max_texts:
            raise InputError(f"pairwise matrix: {len(texts)} texts, at most {max_texts}; give fewer texts")
        e = self.embed(texts)
        return PairwiseResult(texts, (e.vectors @ e.vectors.T).astype(float).tolist(), e.model, e.elapsed_s)

    def nlu(self, text: Any, schema: Any, task: str | None = None, *,
            timing: EngineTime | None = None, cancel: CancelToken | None = None) -> NluResult:
        """RexUniNLU on one text. Its work is bounded by the NLU budgets (BudgetExceededError, 422) and, like
        every call, by the request deadline and the client's cancellation."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        (text,) = self.check_texts(text, "text")
        model = self._need(self.nlu_model, "NLU")
        s = self.settings
        timing = EngineTime() if timing is None else timing
        with self._work(timing, cancel):
            out = model.infer(text, schema, task, max_forwards=s.nlu_max_forwards,
                              max_paths=s.nlu_max_paths)
        return NluResult(task=out["task"], output=out["output"], truncated=bool(out["truncated"]),
                         model=model.info.name, elapsed_s=timing.seconds)

    # ---- what is loaded --------------------------------------------------------------------------------
    def _loaded(self) -> list[tuple[str, Embedder | CrossEncoder | Nlu]]:
        adapters = zip(ROLES, (self.embedder, self.cross_encoder, self.nlu_model), strict=True)
        return [(role, m) for role, m in adapters if m is not None]

    def models(self) -> tuple[ModelDescription, ...]:
        """The loaded models in role order (embed, cross, nlu)."""
        out = []
        for role, m in self._loaded():
            i = m.info
            out.append(ModelDescription(role=role, family=i.family, name=i.name, path=i.path,
                                        max_length=i.max_length, dimension=i.dimension, device=i.device,
                                        dtype=i.dtype, engine=i.engine))
        return tuple(out)

    def describe(self) -> Capabilities:
        return Capabilities(self.models())

    def close(self) -> None:
        """Stop the engine's workers, each once its queue is empty. A short-lived process (a shell command) calls it
        before it exits: a daemon worker still inside torch while the interpreter shuts down can abort the process
        ("terminate called without an active exception", status 134) after its output was written."""
        for _, model in self._loaded():
            model.queue.close()

    def engine_queues(self) -> dict[str, EngineQueueStats]:
        """Role → what its engine queue has done (the /metrics counters and the status page)."""
        return {role: EngineQueueStats(m.queue.across, m.queue.waiting, m.queue.stats.forwards, m.queue.stats.items,
                                       m.queue.stats.shared_forwards, len(m.queue.stats.padded_lengths))
                for role, m in self._loaded()}

    # ---- which checkpoint serves each role -------------------------------------------------------------
    def serving(self) -> tuple[ServingCheckpoint, ...]:
        """What serves each loaded role now, in role order."""
        return tuple(self._serving[role] for role, _ in self._loaded())

    def tuned_checkpoints(self, role: str) -> list[str]:
        """The tuned checkpoint directories `role` may be pointed at, newest first."""
        return [str(p) for p in self.checkpoints.tuned(role)] if self.checkpoints else []

    def serve_checkpoint(self, role: str, checkpoint: str) -> ServingCheckpoint:
        """Point `role` at another checkpoint without a restart: load it and warm it up beside the one serving (both
        are in memory for that while), then install it in the role's queue between two forwards and release the
        old one once its last requests are done. Requests keep being served throughout, each wholly by one model.
        `checkpoint`: "original", a tuned checkpoint's name or its path (app/checkpoints.py says which are allowed).
        ConflictError while another swap runs."""
        if self.checkpoints is None or self.loader is None:
            raise InputError("this process cannot change its models while it runs (only the server can)")
        path = self.checkpoints.resolve(role, checkpoint)
        return self._swap(role, path)

    def rollback_checkpoint(self, role: str) -> ServingCheckpoint:
        """Serve the checkpoint `role` served before the last swap again (a second rollback undoes the first)."""
        if role not in self._serving:
            raise InputError(f"no model role {role!r} is served here; roles: {', '.join(self._serving)}")
        previous = self._serving[role].previous
        if previous is None:
            raise InputError(f"the {role} model has not been swapped since the start: there is nothing to roll "
                             "back to")
        return self.serve_checkpoint(role, previous)

    def _swap(self, role: str, path: Any) -> ServingCheckpoint:
        if not self._swap_lock.acquire(blocking=False):
            raise ConflictError("a model swap is already running: one at a time; retry when it is done "
                                "(GET /v1/models shows what serves)")
        try:
            old = self._need(getattr(self, _ATTRIBUTES[role]), role)
            before = self._serving[role]
            name = self._checkpoint_name(role, path)
            started = time.perf_counter()
            log.info("event=model_swap_start role=%s from=%s to=%s", role, before.path, path)
            try:
                new = self.loader(role, path, name, old.queue)  # type: ignore[misc]
                self._warm_up(role, new)
            except ModelUnavailableError as e:
                raise InputError(f"checkpoint {str(path)!r} cannot be loaded as the {role} model: {e.message}; "
                                 f"{before.name} keeps serving") from None
            # Between two forwards: the one in flight and the requests already queued finish on the old model.
            old.queue.install(new)
            setattr(self, _ATTRIBUTES[role], new)
            state = ServingCheckpoint(role, name, str(path), time.time(), before.path, before.original)
            self._serving[role] = state
            released = old.queue.wait_released(old, SWAP_RELEASE_WAIT_S)
            log.info("event=model_swapped role=%s name=%s path=%s previous=%s seconds=%.2f old_released=%s", role,
                     name, path, before.path, time.perf_counter() - started, released)
            del old
            free_cache()  # the old weights' device memory back to the driver, not kept by torch's allocator
            return state
        finally:
            self._swap_lock.release()

    def _checkpoint_name(self, role: str, path: Any) -> str:
        if str(path) == self._serving[role].original:
            return self._original_names[role]
        return f"{TUNED}/{path.name}"

    @staticmethod
    def _warm_up(role: str, model: Any) -> None:
        """One small call through the new model before it serves (it runs in the role's queue like a request,
        taking its turn between the old model's forwards): the first request on it pays no first-call costs, and
        a checkpoint that loads but cannot run is refused before it serves anyone."""
        if role == "embed":
            model.embed(list(WARM_UP_TEXTS), normalize=True)
        elif role == "cross":
            model.score([WARM_UP_TEXTS[0]], [WARM_UP_TEXTS[1]])
        else:
            model.infer(WARM_UP_TEXTS[0], WARM_UP_SCHEMA, None, max_forwards=64, max_paths=64)

    def weigh_models(self, measure: Callable[[object], int]) -> dict[str, int]:
        """Role → what `measure` says of that loaded model (the server passes app.hostinfo.module_bytes, which
        counts weight bytes): the surfaces measure models without holding them."""
        return {role: measure(m) for role, m in self._loaded()}
