"""The server's phases (loading → ready → draining) and the ASGI gate that enforces them.

    LOADING ──(all models loaded)──▶ READY ──(SIGTERM/SIGINT)──▶ DRAINING ──(idle or --drain-s)──▶ exit 0
       └──────────────────────(SIGTERM)──────────────────────────▲
       └──(a model cannot load)──▶ FAILED ──▶ exit 2

While loading, every route except the probes answers 503 with Retry-After. While draining, nothing new is
taken (503, /readyz 503), but what is already running finishes: HTTP requests in progress, and Gradio
events already queued — their result streams (GET /gradio_api/…) stay open until they are delivered.

Why a gate of our own: Gradio's and uvicorn's servers stop at once on SIGTERM and cut in-flight requests.

The gate also bounds every request body while it is received, uploads included: at most --max-upload-mib for
the whole body (all files of an upload together), and at most --max-upload-files parts in a multipart body. A
body past either limit gets 413 and is not read further; whatever the app had begun to store of it is deleted
by the app's multipart parser (see BodyRefused).

Speaks bare ASGI; imports nothing from the web stack but python_multipart's exception type.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import threading
import time
from collections.abc import Callable

from app.errors import BodyTooLargeError, HttpError, ModelUnavailableError, UnavailableError, WenmoError
from app.service import Service
from app.web.boundary import BODY_CAP_SCOPE_KEY, log_error, send_error

try:  # Gradio's upload parser deletes the files it has begun only when the parse fails with this type
    from python_multipart.exceptions import MultipartParseError
except ImportError:  # pragma: no cover - no multipart parser, nothing to clean up after
    MultipartParseError = ValueError  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz"})
# Long-lived result, heartbeat and reload-notice streams: not "work", and they must stay open while draining.
STREAMS = ("/gradio_api/queue/data", "/gradio_api/heartbeat", "/gradio_api/stream", "/gradio_api/dev/reload")
RETRY_AFTER_S = 5
# After the last job ends: quiet time with no request at all before exiting, so that a result can travel
# down its open stream and the client can fetch the files it names (gradio_client downloads them at once).
QUIET_S = 1.0


# Gradio's routes that fetch a URL on the client's behalf (made for Hugging Face Spaces): on a private server
# they would let any logged-in user make this machine fetch what it can reach. Gradio refuses private
# addresses there, but a relay is no feature of ours.
URL_FETCH_REFUSED = ("此服务器不代取网址 (this server does not fetch URLs for clients): /gradio_api/proxy= and "
                     "/gradio_api/file=<http(s) URL> are turned off; fetch the URL yourself")


def fetches_url(path: str) -> bool:
    if path.startswith("/gradio_api/proxy="):
        return True
    if path.startswith("/gradio_api/file="):
        target = path[len("/gradio_api/file="):].lstrip().lower()
        return target.startswith(("http:", "https:", "//"))
    return False


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Lifecycle:
    """Holds the phase and the service; counts work in flight."""

    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self._service: Service | None = None
        self.lock = threading.Lock()
        self.http_in_flight = 0
        self.last_request_at = 0.0  # monotonic time a request other than a probe or stream last started/ended
        self.load_error: str | None = None
        # Extra sources of in-flight work (the Gradio queue, the limiter), added by the server.
        self.work_probes: list[Callable[[], int]] = []
        self.on_ready: list[Callable[[], None]] = []  # run once, in the loading thread, when the service is set

    @property
    def service(self) -> Service:
        if self._service is None:
            error = ModelUnavailableError("模型仍在加载 (models are still loading); retry in a few seconds")
            error.retry_after_s = RETRY_AFTER_S  # type: ignore[attr-defined]
            raise error
        return self._service

    @property
    def loaded(self) -> bool:
        return self._service is not None

    def set_ready(self, service: Service) -> None:
        self._service = service
        if self.phase is Phase.LOADING:  # a SIGTERM during loading wins
            self.phase = Phase.READY
            log.info("event=ready")
        for hook in self.on_ready:
            hook()

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

    def __init__(self, app: Callable, lifecycle: Lifecycle, max_body_bytes: int, max_upload_files: int = 10) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.max_body_bytes = max_body_bytes
        self.max_upload_files = max_upload_files

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
        if fetches_url(path):
            error = HttpError(URL_FETCH_REFUSED, 403)
            log_error(error, scope)
            await send_error(send, error)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            error = BodyRefused(too_large_message(self.max_body_bytes, int(length)))
            log_error(error, scope)
            await send_error(send, error)
            return
        cap = BodyCap(self.max_body_bytes, self.max_upload_files, multipart_boundary(headers.get(b"content-type")))
        scope = dict(scope, **{BODY_CAP_SCOPE_KEY: cap})  # the error boundary inside leaves a refusal to the cap
        if path.startswith(STREAMS):
            await cap.serve(self.app, scope, receive, send)
            return
        with self.lifecycle.lock:
            self.lifecycle.http_in_flight += 1
            self.lifecycle.last_request_at = time.monotonic()
        try:
            await cap.serve(self.app, scope, receive, send)
        finally:
            with self.lifecycle.lock:
                self.lifecycle.http_in_flight -= 1
                self.lifecycle.last_request_at = time.monotonic()

    async def _unavailable(self, scope: dict, send: Callable, phase: Phase) -> None:
        if phase is Phase.LOADING:
            message = "Wenmo 正在加载模型 (loading models); retry in a few seconds"
        else:
            message = "Wenmo 正在停止 (shutting down, not taking new work); retry shortly"
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        # A browser opening the page while models load sees a note that reloads itself.
        await send_error(send, UnavailableError(message, RETRY_AFTER_S), html_page=b"text/html" in accept)


class BodyRefused(BodyTooLargeError, MultipartParseError):
    """A body past a limit (413). Also a multipart parse error: raised while Gradio's upload parser reads the
    body, it makes the parser delete the files it had begun, so nothing of a refused upload stays on disk."""


def too_large_message(limit: int, got: int | None = None) -> str:
    size = f"{got} bytes" if got is not None else f"more than {limit} bytes"
    return (f"请求体过大 (request body too large): its size is {size}, the limit is {limit // 2**20} MiB ({limit} "
            "bytes) for one request — all files of one upload together (--max-upload-mib / WENMO_MAX_UPLOAD_MIB); "
            "send less per request")


def too_many_files_message(limit: int) -> str:
    return (f"一次上传的文件过多 (too many files in one upload): more than {limit} files (multipart parts); at most "
            f"{limit} per request (--max-upload-files / WENMO_MAX_UPLOAD_FILES); upload fewer at a time")


_BOUNDARY = re.compile(rb'boundary=(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)


def multipart_boundary(content_type: bytes | None) -> bytes | None:
    """The boundary of a multipart body, from its Content-Type; None for any other body."""
    if not content_type or not content_type.lower().lstrip().startswith(b"multipart/"):
        return None
    m = _BOUNDARY.search(content_type)
    return (m.group(1) or m.group(2)) if m else None


class PartCounter:
    """Counts the parts of a multipart body while it streams by: each delimiter line `--boundary` except the
    closing `--boundary--` begins one (RFC 2046 5.1.1), also when a delimiter is split between two chunks."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.window = b"\r\n"  # the first delimiter may open the body, with no CRLF before it
        self.parts = 0
        self.closed = False

    def feed(self, chunk: bytes) -> int:
        """The number of parts begun so far."""
        if self.closed:
            return self.parts
        data = self.window + chunk
        size = len(self.delimiter)
        # A delimiter is decided once the two bytes after it are here ("--" closes the body); one that starts
        # in the last size+1 bytes is not, and those bytes are searched again with the next chunk.
        keep_from = max(0, len(data) - size - 1)
        pos = 0
        while (i := data.find(self.delimiter, pos)) >= 0 and i < keep_from:
            if data[i + size: i + size + 2] == b"--":
                self.closed = True
                break
            self.parts += 1
            pos = i + size
        self.window = data[keep_from:]
        return self.parts


class BodyCap:
    """One request's body, counted while the app receives it. Past a limit, the app's next receive raises
    BodyRefused, and the refusal (413) is the answer whatever the app then does: its own answer (a 400 from a
    parser that failed, say) is dropped, and an exception it raises over it is the refusal's echo."""

    def __init__(self, max_bytes: int, max_files: int, boundary: bytes | None) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.parts = PartCounter(boundary) if boundary else None
        self.seen = 0
        self.refused: WenmoError | None = None
        self.started = False  # the app's answer began before any refusal: it is left alone
        self.answered = False

    async def serve(self, app: Callable, scope: dict, receive: Callable, send: Callable) -> None:
        async def capped_receive() -> dict:
            if self.refused is not None:
                raise self.refused
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                self.seen += len(chunk)
                if self.seen > self.max_bytes:
                    self.refused = BodyRefused(too_large_message(self.max_bytes))
                elif self.parts is not None and self.parts.feed(chunk) > self.max_files:
                    self.refused = BodyRefused(too_many_files_message(self.max_files))
                if self.refused is not None:
                    raise self.refused
            return message

        async def guarded_send(message: dict) -> None:
            if self.refused is None or self.started:
                self.started = self.started or message["type"] == "http.response.start"
                await send(message)
            elif message["type"] == "http.response.start":
                await self._answer(scope, send)

        try:
            await app(scope, capped_receive, guarded_send)
        except Exception:
            if self.refused is None or self.started:
                raise
        if self.refused is not None and not self.started:
            await self._answer(scope, send)

    async def _answer(self, scope: dict, send: Callable) -> None:
        if self.answered or self.refused is None:
            return
        self.answered = True
        log_error(self.refused, scope)
        await send_error(send, self.refused)
