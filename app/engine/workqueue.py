"""The engine owns the work: one queue per model role, and one worker thread that forms every forward from what
is queued, across requests.

A request hands its queue a list of work items — encoded texts, text pairs, NLU windows, each with its length in
tokens — and waits. The worker takes items from every waiting request, plans them under the token budget, the
batch-size cap and the fill floor (app/engine/batching.py: longest first, padding reaches only the longest of
its own forward), runs one forward through the model (with the scheduler's out-of-memory split and retry), and
hands each request its slice. A lone request never waits for company: the worker starts the moment an item
arrives, and a lone request's forwards are exactly the ones `plan_batches` gives for it alone. Company comes
from the forward in flight: whatever arrives while it runs shares the next one. (TEI's queue.rs and Infinity's
batch handler work the same way.)

Fairness, the rule: requests take turns. Each forward is formed by going round the waiting requests in turn
order — oldest first on arrival, then whoever was served longest ago — taking each request's next item (its
items go longest first) until `max_batch_size` candidates are on the table; the candidates are planned, and the
forward is the planned batch that holds the first candidate of the request whose turn it is. That request then
goes to the back of the line. So a 10,000-text request shares the worker with a single text that arrives after
it: the single text runs within the next forward or two (one per request ahead of it), not after 10,000 texts.

Deadlines and cancellation travel with the items: each request carries its WorkScope (app/engine/cancellation.py,
captured where the request was submitted). Before every forward the worker checks every waiting request;
a cancelled or expired one is failed and its remaining items dropped, so no forward runs for nobody. The scope
also hears how many of its items each forward finished (`WorkScope.advance`: the CLI's progress bar).

With `across=False` (setting batch_across_requests=off) a request runs its own forwards in its own thread, as
before the queue existed; kept for comparison (bench: `python -m app bench-batching`).

Swapping the model (app/engine/swap.py): each request runs on the model it was submitted to — the adapter that
encoded its inputs is the one whose network runs them and whose post-processing reads the results — and a
forward only ever holds requests of one model. `install(model)` points the queue at a new model for the requests
submitted from then on; the forward in flight finishes on the old one, requests already queued for the old one
finish on it (taking turns with the new ones as usual), and `serves(old)` tells when none is left, so the old
weights can be released. No request fails and none waits on a half-loaded model: the new one is loaded and warmed
up before it is installed.

The model side is `forward(payloads) -> results`, one result per payload in order (BatchModel below);
`finish(index, result)` (optional, per request) reduces a result in the worker as soon as its forward ends — the
NLU walk keeps its spans and drops each window's (L, L) logits there. No torch here.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.engine.batching import plan_batches
from app.engine.cancellation import WorkScope, current_scope
from app.engine.scheduler import run_batched, run_with_retry
from app.engine.shapes import padded_length
from app.errors import WenmoError

Finish = Callable[[int, Any], Any]


class BatchModel(Protocol):
    """What the engine needs from a model family: run one forward over ready work items."""

    def forward_batch(self, payloads: Sequence[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int
    max_batch_size: int
    min_fill: float = 0.0
    length_buckets: bool = False  # forwards pad up app/engine/shapes.py's ladder, not to the longest row only
    max_length: int | None = None  # the model's longest input: the ladder's top

    def padded(self, longest: int) -> int:
        """The length a forward whose longest item has `longest` tokens pads its rows to."""
        return padded_length(longest, self.length_buckets, self.max_length)


@dataclass(eq=False)
class _Request:
    payloads: Sequence[Any]
    lengths: Sequence[int]
    finish: Finish | None
    scope: WorkScope | None
    model: BatchModel  # the model this request was submitted to: every one of its forwards runs on it
    pending: list[int]  # item indices not yet taken by a forward, longest first
    results: list[Any]
    left: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            # One of ours (a refusal, a deadline, out of memory) is answered without a traceback, and its traceback
            # would hold the worker's frames (the forward's tensors) as long as the request thread keeps the error.
            # Anything else is a bug: it keeps its traceback for the surface's error boundary to log.
            self.error = _detached(error) if isinstance(error, WenmoError) else error
        self.pending.clear()
        self.done.set()


def _detached(error: BaseException) -> BaseException:
    """`error` without the worker's frames: no traceback on it or on the exceptions chained to it. A refusal raised
    while handling another exception (the NLU walk's TooManySpans → BudgetExceededError) would otherwise keep,
    through its __context__'s traceback, the frame that held the whole forward's logits — ~40 MB per refused
    request, for as long as the surface keeps the error (measured over HTTP, tests/security/test_nlu_budget.py)."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error


@dataclass
class QueueStats:
    forwards: int = 0
    items: int = 0
    shared_forwards: int = 0  # forwards that held items of more than one request
    # The padded lengths forwards ran at (at most the model's maximum, 20 up to 512 with the length ladder): how many
    # input shapes the libraries under torch have met, which the ladder bounds (app/engine/shapes.py).
    padded_lengths: set[int] = field(default_factory=set)


class WorkQueue:
    """One model role's queue and worker. `run` is called from request threads (any number at once)."""

    def __init__(self, name: str, model: BatchModel, limits: BatchLimits, *, across: bool = True) -> None:
        self.name = name
        self.model = model
        self.limits = limits
        self.across = across
        self.stats = QueueStats()
        self._lock = threading.Condition()
        self._turns: deque[_Request] = deque()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._alone: dict[int, int] = {}  # id(model) → requests running alone on it (across=False)

    # ---- request side --------------------------------------------------------------------------------------
    def run(self, payloads: Sequence[Any], lengths: Sequence[int], finish: Finish | None = None, *,
            model: BatchModel | None = None) -> list[Any]:
        """Results for `payloads` in their order (each through `finish` when given). Raises what a forward
        raised for these items, CancelledError / DeadlineExceededError when the request's scope ends first.
        `model`: the model that made the payloads (an adapter passes itself); None: the one installed now."""
        if len(payloads) != len(lengths):
            raise ValueError("one length per payload")
        if not payloads:
            return []
        if not self.across:
            return self._run_alone(payloads, lengths, finish, model or self.model)
        scope = current_scope()
        if scope is not None:
            scope.check()
        order = sorted(range(len(payloads)), key=lambda i: -lengths[i])
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} queue is closed")
            req = _Request(payloads, lengths, finish, scope, model or self.model, order, [None] * len(payloads),
                           len(payloads))
            self._turns.append(req)
            self._ensure_worker()
            self._lock.notify_all()  # the worker (wait_released waits on this condition too)
        req.done.wait()
        if req.error is not None:
            try:
                raise req.error
            finally:
                # The error's traceback holds this frame, and this frame held the error through `req`: a cycle that
                # only the cyclic collector frees, and with it every frame above — an NLU walk's ~10,000 refused
                # spans (~100k objects) outlived each refusal until a collection
                # (tests/models/test_nlu_refusal_memory.py).
                del req
        return req.results

    def _run_alone(self, payloads: Sequence[Any], lengths: Sequence[int], finish: Finish | None,
                   model: BatchModel) -> list[Any]:
        scope = current_scope()
        with self._lock:
            self._alone[id(model)] = self._alone.get(id(model), 0) + 1
        try:
            return self._run_alone_on(model, payloads, lengths, finish, scope)
        finally:
            with self._lock:
                self._alone[id(model)] -= 1
                if not self._alone[id(model)]:
                    del self._alone[id(model)]
                self._lock.notify_all()

    def _run_alone_on(self, model: BatchModel, payloads: Sequence[Any], lengths: Sequence[int], finish: Finish | None,
                      scope: WorkScope | None) -> list[Any]:
        def run(batch: list[int]) -> list[Any]:
            out = model.forward_batch([payloads[i] for i in batch])
            done = [finish(i, r) if finish else r for i, r in zip(batch, out, strict=True)]
            if scope is not None:
                scope.advance(len(batch))
            return done

        lim = self.limits
        return run_batched(lengths, run, lim.max_batch_tokens, lim.max_batch_size, lim.min_fill, lim.padded)

    @property
    def waiting(self) -> int:
        """Requests with items queued or in the forward now running."""
        with self._lock:
            return len(self._turns)

    def install(self, model: BatchModel) -> BatchModel:
        """Point the queue at `model` for every request submitted from now on; returns the model it replaces.
        The forward in flight and the requests already queued finish on the model they were submitted to."""
        with self._lock:
            old, self.model = self.model, model
            return old

    def serves(self, model: BatchModel) -> bool:
        """Whether any request (queued, in a forward, or running alone) is still on `model`."""
        with self._lock:
            return self._serves(model)

    def _serves(self, model: BatchModel) -> bool:
        return id(model) in self._alone or any(r.model is model for r in self._turns)

    def wait_released(self, model: BatchModel, timeout_s: float | None = None) -> bool:
        """Block until no request is on `model` (True), or `timeout_s` passes (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._serves(model), timeout_s)

    def close(self) -> None:
        """Stop the worker once the queue is empty (tests; the server's process exit needs nothing)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._worker is not None:
            self._worker.join()

    # ---- worker side ---------------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._loop, name=f"wenmo-{self.name}-worker", daemon=True)
            self._worker.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._turns and not self._closed:
                    self._lock.wait()
                if not self._turns:
                    return
                self._drop_stopped()
                taken = self._form_forward()
            if taken:
                self._run_forward(taken)
            # Not kept while the worker waits: the last forward's requests (their inputs, results and, for NLU,
            # every span the walk found) would stay alive until the next forward, however long that is.
            del taken

    def _drop_stopped(self) -> None:
        for req in list(self._turns):
            if req.scope is None:
                continue
            try:
                req.scope.check()
            except Exception as e:  # CancelledError / DeadlineExceededError
                req.fail(e)
        self._forget_finished()

    def _forget_finished(self) -> None:
        # A failed request leaves the line at once; its items still in a running forward are skipped when that
        # forward delivers. A request whose last items are in the running forward stays until they come back.
        self._turns = deque(r for r in self._turns if r.error is None and r.left > 0)
        self._lock.notify_all()  # wait_released

    def _form_forward(self) -> list[tuple[_Request, int]]:
        """Pick the next forward's items (the turn rule in the module docstring) and take them off the line."""
        lim = self.limits
        candidates: list[tuple[_Request, int]] = []
        turns = [r for r in self._turns if r.pending]
        if not turns:
            return []
        # One forward, one model: only the requests on the model of the request whose turn it is (after a swap,
        # the old model's last requests and the new one's take turns until the old ones are done).
        turns = [r for r in turns if r.model is turns[0].model]
        cursors = [0] * len(turns)
        progressed = True
        while len(candidates) < lim.max_batch_size and progressed:
            progressed = False
            for k, req in enumerate(turns):
                if cursors[k] < len(req.pending) and len(candidates) < lim.max_batch_size:
                    candidates.append((req, req.pending[cursors[k]]))
                    cursors[k] += 1
                    progressed = True
        lengths = [req.lengths[i] for req, i in candidates]
        batches = plan_batches(lengths, lim.max_batch_tokens, lim.max_batch_size, lim.min_fill, lim.padded)
        chosen = next(b for b in batches if 0 in b)
        taken = [candidates[p] for p in chosen]
        gone: dict[_Request, set[int]] = {}  # requests hash by identity (eq=False)
        for req, i in taken:
            gone.setdefault(req, set()).add(i)
        for req, items in gone.items():
            req.pending = [i for i in req.pending if i not in items]
        # The served request goes to the back of the line.
        head = turns[0]
        self._turns.remove(head)
        self._turns.append(head)
        return taken

    def _run_forward(self, taken: list[tuple[_Request, int]]) -> None:
        model = taken[0][0].model
        try:
            outputs = run_with_retry(lambda batch: model.forward_batch([taken[p][0].payloads[taken[p][1]]
                                                                             for p in batch]),
                                     list(range(len(taken))))
        except Exception as e:
            outputs = None
            error: BaseException | None = e
        else:
            error = None
        with self._lock:
            self.stats.forwards += 1
            self.stats.items += len(taken)
            self.stats.padded_lengths.add(self.limits.padded(max(req.lengths[i] for req, i in taken)))
            if len({r for r, _ in taken}) > 1:
                self.stats.shared_forwards += 1
        delivered: dict[_Request, int] = {}  # request → its items this forward finished
        for p, (req, i) in enumerate(taken):
            if req.error is not None:
                continue
            if error is not None:
                # Each request raises its own instance of one of ours, in its own thread; a bug's one instance
                # (with its traceback) goes to all of them.
                req.fail(copy.copy(error) if isinstance(error, WenmoError) else error)
                continue
            try:
                req.results[i] = req.finish(i, outputs[p]) if req.finish else outputs[p]  # type: ignore[index]
            except Exception as e:  # this request's own reduction failed (e.g. its NLU budget): only it fails
                req.fail(e)
                continue
            req.left -= 1
            delivered[req] = delivered.get(req, 0) + 1
        for req, items in delivered.items():
            if req.error is not None:  # failed by a later item of this forward: already answered
                continue
            if req.scope is not None:
                req.scope.advance(items)  # before `done`: the caller sees every item counted once it returns
            if req.left == 0:
                req.done.set()
        with self._lock:
            self._forget_finished()
