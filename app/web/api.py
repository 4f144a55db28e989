"""HTTP routes beside the UI, on the same server, behind the same auth and the same concurrency cap:

    GET  /healthz          liveness: the process answers (no auth, reveals nothing else; HEAD too)
    GET  /readyz           readiness: 200 once every model is loaded; 503 while loading or draining (no auth; HEAD too)
    GET  /metrics          Prometheus text format 0.0.4 (OpenMetrics to a scraper that asks for it)
    POST /v1/embeddings    OpenAI-compatible embeddings (float or base64 of little-endian float32)
    POST /v1/similarity    {source, candidates, rerank}
    POST /v1/nlu           {text, schema, task}
    GET  /v1/models                     what serves each role: checkpoint name, path, loaded_at, previous, tuned ones
    POST /v1/models/{role}              {checkpoint} → serve that checkpoint without a restart; the new state
    POST /v1/models/{role}/rollback     serve the previous checkpoint again; the new state

Another method on these paths gets 405 with `Allow`; an unknown /v1 path gets 404. Every error answer, of these
routes and of Gradio's, leaves through the boundary in app/web/boundary.py as {"error": {"message", "type"}}:
here we only translate what FastAPI, Starlette and Gradio raise into the error tree (`translate`): a body that
is not UTF-8, not JSON or nested too deep → 400, a body of the wrong shape → 422, text with a lone surrogate or
input the service rejects (InputError) → 400, busy (OverloadedError) → 429 with Retry-After, a model that is
not loaded → 503, a failed inference → 500.
Handlers are plain `def`s: FastAPI runs them in worker threads, where the service's limiter may block.

Successful answers of the /v1 routes carry `X-Wenmo-Engine-Ms`: milliseconds the request spent in the models
(tokenization, forward passes, pooling), as the service measured it — not the wait for a concurrency slot,
nor parsing or serializing. HTTP end-to-end time minus this is the server's own overhead (`loadtest`).
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Mount

from app.engine.cancellation import CancelToken
from app.errors import (
    CancelledError,
    HttpError,
    InputError,
    MethodNotAllowedError,
    NotFoundError,
    OverloadedError,
    ShapeError,
    WenmoError,
)
from app.service import EngineTime
from app.web.boundary import ErrorBoundary, check_unicode
from app.web.context import ServerContext
from app.web.disconnect import until_disconnect
from app.web.lifecycle import Phase

log = logging.getLogger(__name__)

ENGINE_TIME_HEADER = "X-Wenmo-Engine-Ms"
# Python's JSON parser recurses once per level: past about this depth it raises RecursionError.
MAX_JSON_DEPTH = sys.getrecursionlimit()

try:  # Gradio depends on orjson: it writes a thousand 1024-d vectors ~10× faster than json
    import orjson

    def dump_json(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover
    import json

    def dump_json(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, default=lambda a: a.tolist()).encode()


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="after")
    def _valid_unicode(self) -> _Body:
        # An InputError (not a ValueError) passes through pydantic unchanged: 400 naming the field and item.
        for name, field in type(self).model_fields.items():
            check_unicode(getattr(self, name), field.alias or name)
        return self


class EmbeddingsRequest(_Body):
    input: str | list[str] = Field(description="a text or a list of texts")
    model: str | None = Field(None, description="accepted and ignored: the server's embedding model answers")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="must equal the model's dimension when given")
    user: str | None = None


class SimilarityRequest(_Body):
    source: str
    candidates: list[str] = Field(description="texts to score against the source")
    rerank: bool = Field(False, description="also score each pair with the cross-encoder, and sort by it")


class NluRequest(_Body):
    text: str
    schema_: dict[str, Any] | str = Field(alias="schema", description="RexUniNLU schema (object or JSON text)")
    task: Literal["extract", "classify", "multi_classify"] | None = None


class CheckpointRequest(_Body):
    checkpoint: str = Field(description='"original", the name of a tuned checkpoint (GET /v1/models lists them), '
                                        "or its path under the tuned directory")


def json_answer(obj: Any, timing: EngineTime) -> Response:
    """A 200 JSON answer with the engine time of the call that produced it."""
    return Response(dump_json(obj), media_type="application/json",
                    headers={ENGINE_TIME_HEADER: f"{timing.seconds * 1000:.3f}"})


def record_error(ctx: ServerContext, operation: str, message: str) -> None:
    if ctx.lifecycle.loaded:
        ctx.service.stats.record_error(operation, message)


def describe_validation(exc: RequestValidationError) -> InputError:
    """A short message naming the fields to fix: 400 (not JSON) or 422 (wrong shape, ShapeError)."""
    by_field: dict[str, list[dict[str, Any]]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            where = err["loc"][-1] if err.get("loc") else "?"
            return InputError(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')} "
                              f"at character {where}); send a JSON object with Content-Type: application/json")
        loc = [x for x in err.get("loc", ()) if x != "body"]
        by_field.setdefault(str(loc[0]) if loc else "", []).append({**err, "loc": loc})
    parts = []
    for name, errs in by_field.items():
        if not name:
            parts.append("the body must be a JSON object; send it with Content-Type: application/json")
            continue
        if any(e.get("type") == "missing" for e in errs):
            parts.append(f"{name}: required, but missing")
            continue
        # A union (`input`: str | list[str]) reports one error per member, tagged with the member's type
        # name in `loc`. An error inside a list item names the item; else say which types are accepted.
        deepest = max(errs, key=lambda e: sum(isinstance(x, int) for x in e["loc"]))
        items = [x for x in deepest["loc"][1:] if isinstance(x, int)]
        tags = [str(e["loc"][1]) for e in errs if len(e["loc"]) > 1 and not isinstance(e["loc"][1], int)]
        shown = repr(deepest.get("input"))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        where = name + "".join(f"[{i}]" for i in items)
        if items or len(tags) < 2:
            parts.append(f"{where}: {deepest.get('msg', 'invalid')} (got {shown})")
        else:
            parts.append(f"{name}: expected {' or '.join(dict.fromkeys(tags))} (got {shown})")
    return ShapeError("; ".join(parts) or "the request body is invalid")


def translate(exc: BaseException) -> WenmoError | None:
    """What FastAPI, Starlette and Gradio raise, as the error tree; None for what we cannot explain (a bug)."""
    if isinstance(exc, RequestValidationError):
        return describe_validation(exc)
    if isinstance(exc, ClientDisconnect) or isinstance(exc.__cause__, ClientDisconnect):
        return CancelledError("the client went away before its request body arrived; nobody reads the answer")
    if isinstance(exc, HTTPException):  # FastAPI's is a subclass
        cause = exc.__cause__  # FastAPI answers "There was an error parsing the body" for these two
        if isinstance(cause, UnicodeDecodeError):
            bad = cause.object[cause.start]
            return InputError(f"the request body is not UTF-8 text (byte {cause.start} is 0x{bad:02x}); send JSON "
                              "encoded as UTF-8")
        if isinstance(cause, RecursionError):
            return InputError(f"the request body is nested too deeply (JSON arrays or objects more than about "
                              f"{MAX_JSON_DEPTH} levels inside each other); a request needs a few levels — flatten it")
        return HttpError(exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False),
                         exc.status_code, exc.headers)
    if isinstance(exc, KeyError) and _raised_in(exc, "get_fn"):  # gradio.route_utils: an fn_index out of range
        return NotFoundError(f"no event with fn_index {exc.args[0]!r} (没有这个接口); GET /config lists them")
    if type(exc).__name__ == "FnIndexInferError":  # gradio.route_utils: an api_name no event has
        name = str(exc).rpartition(":")[2].strip()
        return NotFoundError(f"no API endpoint named {name!r} (没有这个接口); GET /gradio_api/info lists them, "
                             "or see the page's \"Use via API\" footer")
    return None


def _raised_in(exc: BaseException, function: str) -> bool:
    """Whether `exc` was raised by a function of this name (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


def gradio_stream_check(api: FastAPI) -> Callable[[dict], WenmoError | None]:
    """A precheck for Gradio's result streams, GET /gradio_api/queue/data?session_hash=… and
    GET /gradio_api/call/<api>/<event_id>: Gradio answers an id it does not know with a 200 event stream that
    then fails (a dropped connection, two tracebacks), and an event whose result was already read with a stream
    of heartbeats that never ends. Both are answered up front as a 404, by Gradio's own bookkeeping: a session
    must have a message queue, an event must be pending (queued, running, or finished and not yet read). If Gradio's
    internals change shape, the check steps aside and the boundary still ends such a stream cleanly."""

    def gradio_queue() -> Any:
        for route in api.routes:
            if isinstance(route, Mount) and hasattr(route.app, "get_blocks"):
                return getattr(route.app.get_blocks(), "_queue", None)
        return None

    def check(scope: dict) -> WenmoError | None:
        path = scope["path"]
        if scope["method"] != "GET" or not path.startswith(("/gradio_api/queue/data", "/gradio_api/call/")):
            return None
        try:
            q = gradio_queue()
            pending = q.pending_messages_per_session
            if path == "/gradio_api/queue/data":
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                session = (query.get("session_hash") or [""])[0]
                if not session or session in pending:
                    return None  # none given: Gradio's own validation answers (rewritten by the boundary)
                return NotFoundError(f"no queued events for session_hash {session[:64]!r}: join the queue first "
                                     "(POST /gradio_api/queue/join with this session_hash), then read the results here")
            parts = path[len("/gradio_api/call/"):].strip("/").split("/")
            if parts[:1] == ["v2"]:
                parts = parts[1:]
            if len(parts) != 2:
                return None
            api_name, event_id = parts
            # An event stays in its session's pending set from its push until a stream delivers its result:
            # one not there has nothing left to send, and Gradio would stream heartbeats to it for ever (a
            # connection the drain waits for).
            if any(event_id in ids for ids in q.pending_event_ids_session.values()):
                return None
            return NotFoundError(f"no pending event {event_id[:64]!r} for /{api_name}: use the event_id that "
                                 f"POST /gradio_api/call/{api_name} returned (a result is read once)")
        except (AttributeError, TypeError):
            return None

    return check


def install_error_handlers(app: FastAPI, ctx: ServerContext) -> None:
    """Put the error boundary (app/web/boundary.py) around every route, ours and Gradio's (mounted later)."""

    async def reraise(request: Request, exc: Exception) -> None:
        # FastAPI's own handlers answer {"detail": …}; the boundary answers instead.
        raise exc

    app.exception_handlers[RequestValidationError] = reraise
    app.exception_handlers[HTTPException] = reraise

    def on_error(error: WenmoError, scope: dict) -> None:
        if error.kind == OverloadedError.kind:
            ctx.metrics.count_busy("http")
        if error.http_status >= 500:
            record_error(ctx, scope["path"], error.message)

    app.add_middleware(ErrorBoundary, translate=translate, precheck=gradio_stream_check(app), on_error=on_error)


def add_method_guards(router: APIRouter) -> None:
    """Another method on one of our paths gets 405 with `Allow`, and an unknown /v1 path 404 (without these,
    Starlette would hand both to the Gradio app mounted at `/`, which answers 404)."""
    allowed: dict[str, set[str]] = {}
    for route in router.routes:
        if isinstance(route, APIRoute):
            allowed.setdefault(route.path, set()).update(route.methods)
    every = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}
    for path, methods in allowed.items():
        allow = sorted(methods)

        def refuse(request: Request, allow: list[str] = allow) -> None:
            raise MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}; use "
                                        f"{' or '.join(allow)}", allow)

        router.add_api_route(path, refuse, methods=sorted(every - methods), include_in_schema=False)

    def unknown(request: Request) -> None:
        known = ", ".join(sorted(p for p in allowed if p.startswith("/v1/")))
        raise NotFoundError(f"no route {request.url.path!r} (没有这个接口); the API routes are {known}")

    router.add_api_route("/v1/{rest:path}", unknown, methods=sorted(every), include_in_schema=False)


def create_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter()

    @router.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=False)
    def readyz() -> JSONResponse:
        phase = ctx.lifecycle.phase
        return JSONResponse({"status": phase.value}, status_code=200 if phase is Phase.READY else 503)

    @router.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        body, content_type = ctx.metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    # The /v1 routes run their work in a worker thread that stops when the client disconnects (app/web/disconnect.py);
    # building the answer (thousands of vectors) happens in that thread too, off the event loop.
    @router.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
        return await until_disconnect(request, lambda cancel: embed_answer(body, cancel))

    def embed_answer(body: EmbeddingsRequest, cancel: CancelToken) -> Response:
        service = ctx.service
        # Without an embedding model, service.embed answers (model unavailable) rather than this check.
        dimension = service.describe().dimension
        if body.dimensions is not None and dimension is not None and body.dimensions != dimension:
            raise InputError(f"dimensions={body.dimensions} is not available: this model gives "
                             f"{dimension}; leave `dimensions` out")
        timing = EngineTime()
        result = service.embed(body.input, timing=timing, cancel=cancel)
        data = []
        for i, vec in enumerate(result.vectors):
            if body.encoding_format == "base64":
                embedding: Any = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
            else:
                embedding = vec
            data.append({"object": "embedding", "index": i, "embedding": embedding,
                         "truncated": bool(result.truncated[i])})
        tokens = int(sum(result.token_counts))
        return json_answer({
            "object": "list", "data": data, "model": result.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }, timing)

    @router.post("/v1/similarity")
    async def similarity(body: SimilarityRequest, request: Request) -> Response:
        return await until_disconnect(request, lambda cancel: similarity_answer(body, cancel))

    def similarity_answer(body: SimilarityRequest, cancel: CancelToken) -> Response:
        timing = EngineTime()
        result = ctx.service.similarity(body.source, body.candidates, rerank=body.rerank, timing=timing,
                                        cancel=cancel)
        out = {**result.as_dict(), "elapsed_s": result.elapsed_s, "model": result.model}
        if result.reranked:
            out["cross_model"] = result.cross_model
        return json_answer(out, timing)

    @router.post("/v1/nlu")
    async def nlu(body: NluRequest, request: Request) -> Response:
        return await until_disconnect(request, lambda cancel: nlu_answer(body, cancel))

    def nlu_answer(body: NluRequest, cancel: CancelToken) -> Response:
        timing = EngineTime()
        result = ctx.service.nlu(body.text, body.schema_, body.task, timing=timing, cancel=cancel)
        return json_answer({**result.as_dict(), "model": result.model}, timing)

    # Swapping a model: authenticated like every /v1 route; a swap runs one at a time (409), loads in this worker
    # thread while the old model keeps serving, and answers once the new one serves.
    @router.get("/v1/models")
    def models() -> Response:
        service = ctx.service
        return Response(dump_json({"object": "list", "data": [
            {**s.as_dict(), "tuned_checkpoints": service.tuned_checkpoints(s.role)} for s in service.serving()]}),
            media_type="application/json")

    @router.post("/v1/models/{role}")
    def serve_checkpoint(role: str, body: CheckpointRequest) -> Response:
        state = ctx.serve_checkpoint(role, body.checkpoint)
        return Response(dump_json(state.as_dict()), media_type="application/json")

    @router.post("/v1/models/{role}/rollback")
    def rollback_checkpoint(role: str) -> Response:
        state = ctx.serve_checkpoint(role, None)
        return Response(dump_json(state.as_dict()), media_type="application/json")

    add_method_guards(router)
    return router
