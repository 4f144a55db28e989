"""What every tab shares: turning errors into readable toasts, counting events, the banner and the footer.

A handler never shows a traceback: errors from the error tree become `gr.Error` with their message, titled by
the error's `kind` (busy gets its own title so people know to retry); anything else is logged with an id the
toast names. Text arguments are checked for lone surrogates first, as the HTTP API does (app/web/boundary.py).
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from app.errors import WenmoError
from app.web.boundary import check_unicode
from app.web.context import ServerContext

log = logging.getLogger(__name__)

DEMO_BANNER = "演示模式：随机权重，结果无意义 (demo mode: random weights, the outputs are meaningless)"

# Toast titles by error kind; any other kind is titled by its status (4xx: the input, 5xx: the inference).
TITLES = {
    "overloaded_error": "繁忙 Busy",
    "model_unavailable_error": "模型不可用 Model unavailable",
    "budget_exceeded_error": "请求过大 Too much work",
    "timeout_error": "超时 Timed out",
}
# Metrics outcome by error kind; else "invalid" (4xx) or "error" (5xx).
OUTCOMES = {"overloaded_error": "busy", "cancelled_error": "cancelled"}


def guarded(ctx: ServerContext, name: str) -> Callable[[Callable], Callable]:
    """Decorator for handlers: errors → gr.Error toasts, and one metrics sample per event."""

    def wrap(fn: Callable) -> Callable:
        params = list(inspect.signature(fn).parameters)

        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            outcome = "error"
            try:
                for param, value in [*zip(params, args, strict=False), *kwargs.items()]:
                    check_unicode(value, param)
                out = fn(*args, **kwargs)
                outcome = "ok"
                return out
            except WenmoError as e:
                # The toast says all there is to say; the frames of the failed work (a batch's activations and
                # logits) must not live on, reachable from the gr.Error's context (app/web/disconnect.py says why).
                e.__traceback__ = None
                client = e.http_status < 500
                outcome = OUTCOMES.get(e.kind, "invalid" if client else "error")
                if not client:
                    _record(ctx, name, e.message)
                title = TITLES.get(e.kind, "输入有误 Invalid input" if client else "推理失败 Inference failed")
                raise gr.Error(e.message, title=title, duration=8 if outcome == "busy" else 10,
                               print_exception=False) from None
            except gr.Error:
                raise
            except Exception as e:
                rid = secrets.token_hex(4)
                log.error("event=ui_error id=%s handler=%s", rid, name, exc_info=e)
                _record(ctx, name, f"internal error id={rid}: {type(e).__name__}")
                raise gr.Error(f"内部错误 (internal error, id {rid}); the server log has the detail",
                               title="错误 Error", print_exception=False) from None
            finally:
                ctx.metrics.observe_event(name, outcome, time.perf_counter() - start)

        return handler

    return wrap


def _record(ctx: ServerContext, operation: str, message: str) -> None:
    if ctx.lifecycle.loaded:
        ctx.service.stats.record_error(f"ui:{operation}", message)


def footer_text(ctx: ServerContext) -> str:
    """Models and vector dimension, for the footer of every page."""
    if not ctx.lifecycle.loaded:
        return "模型加载中 (models loading)…"
    caps = ctx.service.describe()
    labels = {"embedding": "向量 embeddings", "cross_encoder": "交叉编码器 cross-encoder", "nlu": "通用理解 NLU"}
    parts = [f"{labels.get(m.family, m.family)}: `{m.name}`" for m in caps.models]
    dim = "—" if caps.dimension is None else caps.dimension
    device = caps.device or "?"
    return f"{' · '.join(parts)} · 向量维度 dimension **{dim}** · {device}"


def short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
