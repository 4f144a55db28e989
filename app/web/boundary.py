"""The one error boundary for HTTP: every error answer of the server has the shape
`{"error": {"message", "type"}}` and is made by one function, `render`.

    our routes ─── WenmoError, pydantic / FastAPI / Starlette exceptions ──┐
    Gradio's routes ─── {"detail": …} or plain-text answers, exceptions ───┤── ErrorBoundary ── translate ─┐
    an exception that escapes any route (a bug) ───────────────────────────┘                              ├─ render
    the ASGI layers outside the app: lifecycle gate (413, 503), basic auth (401, 429) ── send_error ──────┘

Status, `type` and extra headers come from the error class (`http_status`, `kind` in app/errors.py,
`retry_after_s`, `http_headers`), never from isinstance chains. Logging is decided here as well: a client
error (4xx) is one line without a traceback; a server error (5xx) is one traceback with a request id, and
an unexpected one names that id in its answer so that the log entry can be found.

Gradio's answers keep their own `detail` beside `error`: Gradio's web client reads it.

Bare ASGI; imports nothing from the web stack (library exceptions are translated by a function the app
passes in, see app/web/api.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from app.errors import HttpError, InputError, InternalError, UnavailableError, WenmoError

log = logging.getLogger(__name__)

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]
ASGIApp = Callable[[dict, Receive, Send], Awaitable[None]]

# The lifecycle gate's body cap for this request (app/web/lifecycle.py); once it has refused the body, its 413 replaces
# whatever the app answers, so the boundary neither logs nor reports the app's answer.
BODY_CAP_SCOPE_KEY = "wenmo.body_cap"
# Error bodies of other layers are read whole to be rewritten; a larger one is passed on as it is.
MAX_FOREIGN_BODY = 64 * 1024
def render(error: WenmoError, *, html_page: bool = False) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of the HTTP answer for `error`: the only place that decides them.
    `html_page`: a short page for a browser that asked for HTML (it reloads itself after Retry-After)."""
    status = int(error.http_status)
    headers = {k.lower(): str(v) for k, v in (getattr(error, "http_headers", None) or {}).items()}
    retry = getattr(error, "retry_after_s", None)
    if retry is not None:
        headers["retry-after"] = str(max(1, int(retry)))
    if html_page:
        refresh = f"<meta http-equiv=refresh content={headers['retry-after']}>" if "retry-after" in headers else ""
        body = (f"<!doctype html><meta charset=utf-8>{refresh}<title>Wenmo</title>"
                f"<p>{html.escape(error.message)}</p>").encode("utf-8", "backslashreplace")
        ctype = "text/html; charset=utf-8"
    else:
        payload: dict[str, Any] = {"error": {"message": error.message, "type": error.kind}}
        detail = getattr(error, "gradio_detail", None)
        if detail is not None:
            payload["detail"] = detail
        # backslashreplace: a message quoting user text with a lone surrogate still goes out as valid UTF-8.
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace")
        ctype = "application/json"
    headers["content-type"] = ctype
    headers["content-length"] = str(len(body))
    return status, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()], body


async def send_error(send: Send, error: WenmoError, *, html_page: bool = False,
                     keep_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send `error` as a complete ASGI answer (for the layers outside the app: lifecycle gate, auth).
    `keep_headers`: headers of an answer being replaced that must survive (CORS, Set-Cookie)."""
    status, headers, body = render(error, html_page=html_page)
    ours = {k for k, _ in headers}
    kept = [(k, v) for k, v in keep_headers if k.lower() not in ours]
    await send({"type": "http.response.start", "status": status, "headers": [*kept, *headers]})
    await send({"type": "http.response.body", "body": body})


def log_error(error: WenmoError, scope: Mapping[str, Any], exc: BaseException | None = None,
              request_id: str | None = None) -> None:
    """One line for a client error; for a server error one line with the request id, plus the traceback of
    the exception behind it."""
    where = f"method={scope.get('method', '?')} path={_short(scope.get('path', ''))!r}"
    if error.http_status < 500:
        log.info("event=client_error status=%d type=%s %s message=%r", error.http_status, error.kind, where,
                 _short(error.message))
        return
    rid = request_id or getattr(error, "request_id", None) or secrets.token_hex(4)
    log.error("event=server_error id=%s status=%d type=%s %s message=%r", rid, error.http_status, error.kind,
              where, _short(error.message), exc_info=exc)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- input no model can take ----------------------------------------------------------------------------
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any, name: str) -> str | None:
    """Where in `value` (a str, or lists / dicts of them, as parsed from JSON) a lone UTF-16 surrogate sits,
    e.g. `input[3], character 7`; None when there is none. JSON lets a client send one ("\\ud800"); it is not
    a Unicode character, so no tokenizer and no UTF-8 encoder takes it."""
    stack: list[tuple[Any, str]] = [(value, name)]
    while stack:  # a loop, not recursion: the nesting is the client's to choose
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                m = _SURROGATE.search(item)
                if m:
                    return f"{where}, character {m.start() + 1} (U+{ord(m.group()):04X})"
        elif isinstance(item, dict):
            for key, sub in reversed(item.items()):
                # A key is named as JSON would write it; one with a surrogate, by the escape that was sent.
                shown = json.dumps(key, ensure_ascii=not isinstance(key, str) or bool(_SURROGATE.search(key)))
                stack.append((sub, f"{where}[{shown}]"))
                if isinstance(key, str):
                    stack.append((key, f"{where} key {shown}"))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
    return None


def check_unicode(value: Any, name: str) -> None:
    """InputError naming the field and position of a lone surrogate in `value`."""
    where = lone_surrogate(value, name)
    if where is not None:
        raise InputError(f"{where}: 含有无效字符 (a lone UTF-16 surrogate, which is not a character): send valid "
                         "Unicode text; in JSON a \\uD800–\\uDFFF escape must be one half of a pair")


# ---- the boundary ---------------------------------------------------------------------------------------
Translate = Callable[[BaseException], "WenmoError | None"]


class ErrorBoundary:
    """ASGI, around the app's routes (FastAPI's and Gradio's): every error leaves through here.

    - An exception (a WenmoError, a library's, a bug) becomes an answer from `render`; nothing is re-raised, so
      uvicorn logs no second traceback. If the answer had already begun (a stream), the stream is ended cleanly
      instead of cut, and the exception is logged by the same rules.
    - An error answer in another layer's shape ({"detail": …}, plain text) is rewritten into ours.
    - `precheck(scope)` may refuse a request before the app sees it (Gradio's result streams answer an unknown id
      with a 200 stream that then fails).
    - `on_error(error, scope)` is told of every error answer (metrics, the status page's error list).
    """

    def __init__(self, app: ASGIApp, translate: Translate,
                 precheck: Callable[[dict], WenmoError | None] | None = None,
                 on_error: Callable[[WenmoError, dict], None] | None = None) -> None:
        self.app = app
        self.translate = translate
        self.precheck = precheck
        self.on_error = on_error

    def classify(self, exc: BaseException) -> tuple[WenmoError, BaseException | None]:
        """The error to answer with, and the exception to log a traceback for (None: a client error)."""
        chain: list[BaseException] = []
        seen: BaseException | None = exc
        while seen is not None and len(chain) < 16:  # explicit causes only (`raise … from …`)
            chain.append(seen)
            seen = seen.__cause__
        for link in chain:  # the outermost WenmoError is what our code meant to say
            if isinstance(link, WenmoError):
                return link, (exc if link.http_status >= 500 else None)
        for link in chain:  # else the outermost error a library raised that we know how to explain
            error = self.translate(link)
            if error is not None:
                return error, (exc if error.http_status >= 500 else None)
        return InternalError(secrets.token_hex(4)), exc

    def _report(self, error: WenmoError, scope: dict, exc: BaseException | None) -> None:
        if getattr(scope.get(BODY_CAP_SCOPE_KEY), "refused", None) is not None:
            return  # the body cap outside refused this request's body: its 413 is the answer, and it logs it
        log_error(error, scope, exc)
        if self.on_error is not None:
            try:
                self.on_error(error, scope)
            except Exception:  # bookkeeping must never turn an answer into a failure
                log.exception("event=error_hook_failed")

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.precheck is not None:
            refused = self.precheck(scope)
            if refused is not None:
                self._report(refused, scope, None)
                await send_error(send, refused)
                return
        held: dict | None = None  # an error answer's start, kept until the app is done with it
        body = bytearray()
        started = finished = False

        async def forward(message: dict) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        async def sending(message: dict) -> None:
            nonlocal held
            kind = message["type"]
            if kind == "http.response.start" and message["status"] >= 400 and not started:
                held = message
                return
            if kind == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if len(body) <= MAX_FOREIGN_BODY:
                    return  # judged when the app returns: an exception may follow and say more
                start, held = held, None  # too large for an error note: pass it on as it came
                await forward(start)
                await forward({"type": "http.response.body", "body": bytes(body),
                               "more_body": message.get("more_body", False)})
                return
            await forward(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the drain's grace is over (SIGTERM, --drain-s passed). Its own
            # answer would be a plain-text 500 and an "Exception in ASGI application" traceback; ours says the
            # server is stopping. The cancellation ends here: nothing above this layer waits for it.
            if not started:
                error = UnavailableError("Wenmo 正在停止 (shutting down): this request was stopped before it "
                                         "finished; retry shortly", retry_after_s=5)
                log_error(error, scope)
                with contextlib.suppress(Exception):
                    await send_error(forward, error)
            return
        except Exception as exc:
            # Handled in a frame of its own: a local here that held the error would be a reference cycle
            # (this frame is in the error's traceback), and the frames it keeps — with a failed forward's
            # activations and logits, tens of MB — would wait for the cyclic garbage collector.
            await self._answer(exc, scope, forward, started=started, finished=finished)
            return
        if held is not None:
            await self._finish_held(held, bytes(body), scope, forward)

    async def _answer(self, exc: Exception, scope: dict, forward: Send, *, started: bool, finished: bool) -> None:
        error, trace = self.classify(exc)
        self._report(error, scope, trace)
        if not started:  # an answer another layer had begun for this failure is replaced
            await send_error(forward, error)
        elif not finished:
            # A stream already under way: end it cleanly (its last event said what went wrong).
            await forward({"type": "http.response.body", "body": b"", "more_body": False})

    async def _finish_held(self, start: dict, body: bytes, scope: dict, forward: Send) -> None:
        headers = list(start.get("headers") or [])
        error = foreign_error(start["status"], headers, body)
        if error is None:  # already ours (or a page for a browser, or a probe's answer): unchanged
            await forward(start)
            await forward({"type": "http.response.body", "body": body})
            return
        self._report(error, scope, None)
        keep = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
        await send_error(forward, error, keep_headers=keep)


def foreign_error(status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> WenmoError | None:
    """The error in another layer's error answer ({"detail": …} from Starlette or Gradio, or plain text);
    None when the answer is already ours or is not an error note (an HTML page, a probe's JSON)."""
    ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"").decode("latin-1").lower()
    if "html" in ctype or "event-stream" in ctype:
        return None
    text = body.decode("utf-8", "replace").strip()
    detail: Any = None
    if "json" in ctype:
        try:
            obj = json.loads(text) if text else None
        except (ValueError, RecursionError):
            obj = text
        if isinstance(obj, dict):
            if isinstance(obj.get("error"), dict) and {"message", "type"} <= obj["error"].keys():
                return None
            if "detail" not in obj:
                return None  # some route's own JSON (e.g. /readyz's {"status": …}): not an error note
            detail = obj["detail"]
            message = describe_detail(detail)
        else:
            message = text
    else:
        message = text
    error = HttpError(message or f"HTTP {status}", status)
    if detail is not None:
        error.gradio_detail = detail  # type: ignore[attr-defined]
    return error


def describe_detail(detail: Any) -> str:
    """A readable message from Starlette's / Gradio's `detail`: a string, or a list of validation entries."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for entry in detail[:10]:
            if isinstance(entry, dict):
                loc = ".".join(str(x) for x in entry.get("loc", ()) if x != "body")
                msg = entry.get("msg") or entry.get("message") or ""
                name = entry.get("parameter_name") or loc
                if entry.get("__type__") == "validate" and entry.get("is_valid") is not False:
                    continue
                parts.append(f"{name}: {msg}" if name else str(msg))
            else:
                parts.append(str(entry))
        return "; ".join(p for p in parts if p) or "the request is invalid"
    return json.dumps(detail, ensure_ascii=False)[:500]
