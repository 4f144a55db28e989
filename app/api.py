"""HTTP routes beside the UI, on the same server, behind the same auth and the same concurrency cap:

    GET  /healthz          liveness: the process answers (no auth, reveals nothing else)
    GET  /readyz           readiness: 200 once every model is loaded; 503 while loading or draining (no auth)
    GET  /metrics          Prometheus text format
    POST /v1/embeddings    OpenAI-compatible embeddings (float or base64 of little-endian float32)
    POST /v1/similarity    {source, candidates, rerank}
    POST /v1/nlu           {text, schema, task}

Errors are mapped here, at one boundary, to {"error": {"message", "type"}} bodies: a malformed JSON body
→ 400, a body of the wrong shape → 422, input the service rejects (InputError) → 400, busy
(OverloadedError) → 429 with Retry-After, a model that is not loaded → 503, a failed inference → 500.
Handlers are plain `def`s: FastAPI runs them in worker threads, where the service's limiter may block.

Successful answers of the /v1 routes carry `X-Wenmo-Engine-Ms`: milliseconds the request spent in the models
(tokenization, forward passes, pooling), as the service measured it — not the wait for a concurrency slot,
nor parsing or serializing. HTTP end-to-end time minus this is the server's own overhead (`loadtest`).
"""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.context import ServerContext
from app.errors import InputError, ModelUnavailableError, OverloadedError, WenmoError
from app.lifecycle import BodyTooLarge, Phase
from app.service import EngineTime

log = logging.getLogger(__name__)

ENGINE_TIME_HEADER = "X-Wenmo-Engine-Ms"

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


def json_answer(obj: Any, timing: EngineTime) -> Response:
    """A 200 JSON answer with the engine time of the call that produced it."""
    return Response(dump_json(obj), media_type="application/json",
                    headers={ENGINE_TIME_HEADER: f"{timing.seconds * 1000:.3f}"})


def error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


def _json(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind), status_code=status, headers=headers)


def wenmo_error_response(ctx: ServerContext, e: WenmoError, operation: str) -> JSONResponse:
    """The one mapping from the error tree to HTTP answers."""
    if isinstance(e, OverloadedError):
        ctx.metrics.count_busy("http")
        return _json(429, e.message, e.kind, {"Retry-After": str(e.retry_after_s)})
    if isinstance(e, InputError):
        return _json(400, e.message, e.kind)
    record_error(ctx, operation, e.message)
    if isinstance(e, ModelUnavailableError):
        return _json(503, e.message, e.kind, {"Retry-After": "5"} if not ctx.lifecycle.loaded else None)
    return _json(500, e.message, e.kind)  # InferenceError (and any future kind): the message says why


def record_error(ctx: ServerContext, operation: str, message: str) -> None:
    if ctx.lifecycle.loaded:
        ctx.service.stats.record_error(operation, message)


def describe_validation(exc: RequestValidationError) -> tuple[int, str]:
    """A short message naming the fields to fix, and 400 (not JSON) or 422 (wrong shape)."""
    by_field: dict[str, list[dict[str, Any]]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            where = err["loc"][-1] if err.get("loc") else "?"
            return 400, (f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')} "
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
    return 422, "; ".join(parts) or "the request body is invalid"


def install_error_handlers(app: FastAPI, ctx: ServerContext) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = describe_validation(exc)
        return _json(status, message, "invalid_request_error")

    @app.exception_handler(WenmoError)
    async def _wenmo(request: Request, exc: WenmoError) -> JSONResponse:
        return wenmo_error_response(ctx, exc, request.url.path)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _json(413, str(exc), "invalid_request_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = secrets.token_hex(4)
        log.error("event=unhandled_error id=%s path=%s", rid, request.url.path, exc_info=exc)
        record_error(ctx, request.url.path, f"internal error id={rid}: {type(exc).__name__}")
        return _json(500, f"内部错误 (internal error, id {rid}); the server log has the detail", "internal_error")


def create_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        phase = ctx.lifecycle.phase
        return JSONResponse({"status": phase.value}, status_code=200 if phase is Phase.READY else 503)

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.post("/v1/embeddings")
    def embeddings(body: EmbeddingsRequest) -> Response:
        service = ctx.service
        if body.dimensions is not None and service.embedder is not None \
                and body.dimensions != service.embedder.dimension:
            raise InputError(f"dimensions={body.dimensions} is not available: this model gives "
                             f"{service.embedder.dimension}; leave `dimensions` out")
        timing = EngineTime()
        result = service.embed(body.input, timing=timing)
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
            "object": "list", "data": data, "model": service.embedder.info.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }, timing)

    @router.post("/v1/similarity")
    def similarity(body: SimilarityRequest) -> Response:
        service = ctx.service
        timing = EngineTime()
        out = service.similarity(body.source, body.candidates, rerank=body.rerank, timing=timing)
        out["model"] = service.embedder.info.name
        if out["reranked"]:
            out["cross_model"] = service.cross_encoder.info.name
        return json_answer(out, timing)

    @router.post("/v1/nlu")
    def nlu(body: NluRequest) -> Response:
        service = ctx.service
        timing = EngineTime()
        out = dict(service.nlu(body.text, body.schema_, body.task, timing=timing))
        out["model"] = service.nlu_model.info.name
        return json_answer(out, timing)

    return router
