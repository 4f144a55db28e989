"""Run a request's work in a worker thread and cancel it when the HTTP client goes away.

FastAPI runs a plain `def` route in a thread and never tells it that the client hung up, so a request whose
caller gave up (a timeout in a script, a closed tab) kept its slot and computed on for nobody. Here the route's
work gets a CancelToken; a task on the event loop waits for the ASGI `http.disconnect` message (which uvicorn
sends once the connection is closed; the body has already been read by then) and cancels the token, and the
engine's next checkpoint stops the work (app/engine/cancellation.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from app.engine.cancellation import CancelToken
from app.errors import WenmoError

log = logging.getLogger(__name__)

T = TypeVar("T")


async def until_disconnect(request: Any, work: Callable[[CancelToken], T]) -> T:
    """`work(token)` in a worker thread; `token` is cancelled if the client disconnects meanwhile."""
    token = CancelToken()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                log.info("event=client_disconnected path=%s action=cancel", request.url.path)
                token.cancel("the client closed the connection")
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await anyio.to_thread.run_sync(work, token)
    except asyncio.CancelledError:
        token.cancel("the server is shutting down")  # the worker stops at its next checkpoint
        raise
    except WenmoError as e:
        # The error's traceback runs through anyio's frames, one of which holds the future that holds the
        # error: a reference cycle. It kept the failed work's frames — a batch's activations and logits, ~60 MB
        # for a long NLU request — alive until the cyclic collector happened to run, and the server's memory
        # rose with every refused request (tests/security/test_nlu_budget.py). Our errors carry their message;
        # the traceback is not needed beyond this point.
        raise e.with_traceback(None) from e.__cause__
    finally:
        watcher.cancel()
