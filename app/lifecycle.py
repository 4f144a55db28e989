"""The server's phases (loading → ready → draining) and the ASGI gate that enforces them.

    LOADING ──(all models loaded)──▶ READY ──(SIGTERM/SIGINT)──▶ DRAINING ──(idle or --drain-s)──▶ exit 0
       └──────────────────────(SIGTERM)──────────────────────────▲
       └──(a model cannot load)──▶ FAILED ──▶ exit 2

While loading, every route except the probes answers 503 with Retry-After. While draining, nothing new is
taken (503, /readyz 503), but what is already running finishes: HTTP requests in progress, and Gradio
events already queued — their result streams (GET /gradio_api/…) stay open until they are delivered.

Why a gate of our own: Gradio's and uvicorn's servers stop at once on SIGTERM and cut in-flight requests.
Imports nothing from the web stack: the gate speaks bare ASGI.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app.errors import ModelUnavailableError

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz"})
# Long-lived result and heartbeat streams: not "work", and they must stay open while draining.
STREAMS = ("/gradio_api/queue/data", "/gradio_api/heartbeat", "/gradio_api/stream")
RETRY_AFTER_S = 5
# After the last job ends: quiet time with no request at all before exiting, so that a result can travel
# down its open stream and the client can fetch the files it names (gradio_client downloads them at once).
QUIET_S = 1.0


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Lifecycle:
    """Holds the phase and the service; counts work in flight."""

    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self._service: Any = None
        self.lock = threading.Lock()
        self.http_in_flight = 0
        self.last_request_at = 0.0  # monotonic time a request other than a probe or stream last started/ended
        self.load_error: str | None = None
        # Extra sources of in-flight work (the Gradio queue, the limiter), added by the server.
        self.work_probes: list[Callable[[], int]] = []

    @property
    def service(self) -> Any:
        if self._service is None:
            raise ModelUnavailableError("模型仍在加载 (models are still loading); retry in a few seconds")
        return self._service

    @property
    def loaded(self) -> bool:
        return self._service is not None

    def set_ready(self, service: Any) -> None:
        self._service = service
        if self.phase is Phase.LOADING:  # a SIGTERM during loading wins
            self.phase = Phase.READY
            log.info("event=ready")

    def set_failed(self, message: str) -> None:
        self.load_error = message
        self.phase = Phase.FAILED

    def work_in_flight(self) -> int:
        return self.http_in_flight + sum(probe() for probe in self.work_probes)

    async def drain(self, timeout_s: float, poll_s: float = 0.05) -> int:
        """Stop taking work and wait until what runs has finished and nothing has been asked for QUIET_S,
        at most `timeout_s`; returns the number of jobs still running when it gave up (0 when drained)."""
        self.phase = Phase.DRAINING
        start = time.monotonic()
        busy = self.work_in_flight()
        log.info("event=drain_started in_flight=%d timeout_s=%g", busy, timeout_s)
        last_busy = time.monotonic()
        while time.monotonic() - start < timeout_s:
            busy = self.work_in_flight()
            now = time.monotonic()
            if busy:
                last_busy = now
            elif now - max(last_busy, self.last_request_at) >= QUIET_S:
                break
            await asyncio.sleep(poll_s)
        if busy:
            log.warning("event=drain_timeout still_running=%d after_s=%g", busy, timeout_s)
        else:
            log.info("event=drained after_s=%.2f", time.monotonic() - start)
        return busy


def _allowed_while_draining(method: str, path: str) -> bool:
    # Result streams and files of jobs that were accepted before the drain began.
    return method in ("GET", "HEAD") and path.startswith("/gradio_api/")


class LifecycleGate:
    """ASGI: 503 outside READY (except the probes); counts HTTP work in flight; caps request bodies."""

    def __init__(self, app: Callable, lifecycle: Lifecycle, max_body_bytes: int) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.lifecycle.phase is not Phase.READY:
                await send({"type": "websocket.close", "code": 1013})  # "try again later"
                return
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        phase = self.lifecycle.phase
        if path in PROBES:
            await self.app(scope, receive, send)
            return
        if phase is not Phase.READY and not (phase is Phase.DRAINING and _allowed_while_draining(method, path)):
            await self._unavailable(scope, send, phase)
            return
        if path.startswith(STREAMS):
            await self.app(scope, receive, send)
            return
        # Uploads are capped by Gradio itself (max_file_size), with its own message in the UI.
        if path != "/gradio_api/upload":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await send_json(send, 413, {"error": {
                    "message": f"request body is {int(length)} bytes, the limit is {self.max_body_bytes} "
                               "(WENMO_MAX_UPLOAD_MIB); send less per request",
                    "type": "invalid_request_error"}})
                return
            receive = self._capped(receive)
        with self.lifecycle.lock:
            self.lifecycle.http_in_flight += 1
            self.lifecycle.last_request_at = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            with self.lifecycle.lock:
                self.lifecycle.http_in_flight -= 1
                self.lifecycle.last_request_at = time.monotonic()

    def _capped(self, receive: Callable) -> Callable:
        """Bodies sent without a Content-Length (chunked) are cut off at the same limit."""
        seen = 0
        limit = self.max_body_bytes

        async def capped() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return capped

    async def _unavailable(self, scope: dict, send: Callable, phase: Phase) -> None:
        if phase is Phase.LOADING:
            message = "Wenmo 正在加载模型 (loading models); retry in a few seconds"
        else:
            message = "Wenmo 正在停止 (shutting down, not taking new work); retry shortly"
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        headers = [(b"retry-after", str(RETRY_AFTER_S).encode())]
        if b"text/html" in accept:
            # A browser opening the page while models load sees a note that refreshes itself.
            body = (f"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content={RETRY_AFTER_S}>"
                    f"<title>Wenmo</title><p>{message}</p>").encode()
            await send_bytes(send, 503, body, b"text/html; charset=utf-8", headers)
            return
        await send_json(send, 503, {"error": {"message": message, "type": "unavailable_error"}}, headers)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes (WENMO_MAX_UPLOAD_MIB); send less per request")


async def send_json(send: Callable, status: int, obj: Any, headers: list | None = None) -> None:
    body = json.dumps(obj, ensure_ascii=False).encode()
    await send_bytes(send, status, body, b"application/json", headers)


async def send_bytes(send: Callable, status: int, body: bytes, ctype: bytes, headers: list | None = None) -> None:
    all_headers = [*(headers or []), (b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
