"""Wenmo's error tree: every failure a user can act on is one of these.

    WenmoError                      500  exit 1
    ├── InputError                  400  exit 2  bad input or settings: what was wrong, what is allowed, what to do
    │   ├── ConfigError             400  exit 2  invalid settings / ds_config.json, detected at start
    │   ├── BodyTooLargeError       413  exit 2  a request body or upload past --max-upload-mib
    │   ├── BudgetExceededError     422  exit 2  a valid request whose work passes a per-request budget
    │   ├── FileRejectedError       400  exit 2  a UI file argument that is not an upload of this server
    │   └── JobRunningError         409  exit 2  a tune job was asked for while one runs (app/tune/jobs.py)
    ├── OverloadedError             429  exit 1  the concurrency cap is full: "busy, retry shortly"
    ├── ModelUnavailableError       503  exit 2  a model cannot be found, downloaded or loaded: a restart cannot
    │                                            fix it, the message says what will (README: "The shell CLI")
    ├── InferenceError              500  exit 1  the forward pass failed (e.g. out of memory after a retry)
    ├── DeadlineExceededError       504  exit 1  the request ran past --request-timeout-s; its work stopped
    ├── StoreFullError              507  exit 1  an upload or export that does not fit --max-file-store-mib
    └── CancelledError              499  exit 1  the client went away; its work stopped (nobody reads the answer)

    At the HTTP edge only: HttpError (a status another layer chose: Starlette, Gradio), NotFoundError 404,
    MethodNotAllowedError 405, ShapeError 422, AuthenticationError 401, RateLimitedError 429,
    UnavailableError 503, InternalError 500 (a bug; its answer names the log entry's id).

Each class knows its HTTP status, its error `type` (the JSON body's) and its exit code, and nothing else
decides them: one function renders an error for HTTP (`render` in app/web/boundary.py), one for the shell
(`report_error` in app/cli.py); the README's error table lists every class. Library errors are translated into
these at one boundary per layer. Error classes live here and nowhere else in `app` (tests/unit/test_error_classes.py).
This module imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class WenmoError(Exception):
    """Base class; `message` is safe to show to the user."""

    kind = "wenmo_error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(WenmoError):
    kind = "invalid_request_error"
    http_status = 400
    exit_code = 2


class ConfigError(InputError):
    kind = "config_error"


class BodyTooLargeError(InputError):
    http_status = 413


class BudgetExceededError(InputError):
    kind = "budget_exceeded_error"
    http_status = 422


FILE_RULE = ("文件不可用 (file not accepted): a file argument must be a file uploaded to this server through "
             "POST /gradio_api/upload (the path that call returned, as it returned it); no other path is read. "
             "Uploads are kept for an hour at most, and removed sooner, oldest first, when the file store is "
             "full (WENMO_MAX_FILE_STORE_MIB); upload the file again and pass the new path")


class FileRejectedError(InputError):
    """A file argument that is not an upload of this process. One message for every reason (missing, outside
    the folder, a link out of it, a folder): the answer must not tell which files exist."""

    def __init__(self) -> None:
        super().__init__(FILE_RULE)


class JobRunningError(InputError):
    """One tune job at a time: starting another while one runs."""

    kind = "conflict_error"
    http_status = 409


class RetryLaterError(WenmoError):
    """Not now, but soon: the answer carries Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverloadedError(RetryLaterError):
    kind = "overloaded_error"
    http_status = 429

    def __init__(self, message: str = "服务繁忙，请稍后重试 (busy, retry shortly)", retry_after_s: int = 1):
        super().__init__(message, retry_after_s)


class ModelUnavailableError(WenmoError):
    # Exit 2 like bad input: a missing or unreadable checkpoint is the operator's to fix (the message says how),
    # and systemd's RestartPreventExitStatus=2 keeps a restart loop from retrying it. Over HTTP it is the 503
    # of a model that is not loaded (yet).
    kind = "model_unavailable_error"
    http_status = 503
    exit_code = 2


class InferenceError(WenmoError):
    kind = "inference_error"


class DeadlineExceededError(WenmoError):
    kind = "timeout_error"
    http_status = 504


class StoreFullError(WenmoError):
    kind = "insufficient_storage_error"
    http_status = 507


class CancelledError(WenmoError):
    kind = "cancelled_error"
    http_status = 499  # nginx's "client closed request": only ever seen in logs


# ---- errors that exist only at the HTTP edge (rendered by app/web/boundary.py) ----------------------------
# `type` of an answer whose status some other layer chose (Starlette, Gradio).
KIND_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "method_not_allowed_error", 408: "timeout_error", 409: "conflict_error", 413: "invalid_request_error",
    415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
    503: "unavailable_error", 504: "timeout_error",
}


class HttpError(WenmoError):
    """An answer whose status another layer chose (a Starlette route, Gradio), in our shape."""

    def __init__(self, message: str, http_status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.kind = KIND_BY_STATUS.get(http_status, "invalid_request_error" if http_status < 500 else "server_error")
        self.exit_code = InputError.exit_code if http_status < 500 else WenmoError.exit_code
        self.http_headers = dict(headers or {})


class NotFoundError(InputError):
    kind = "not_found_error"
    http_status = 404


class MethodNotAllowedError(InputError):
    kind = "method_not_allowed_error"
    http_status = 405

    def __init__(self, message: str, allow: Iterable[str]) -> None:
        super().__init__(message)
        self.http_headers = {"Allow": ", ".join(allow)}


class ShapeError(InputError):
    """Valid JSON of the wrong shape (a missing field, a number where a list belongs)."""

    http_status = 422


class AuthenticationError(InputError):
    """No credentials, or wrong ones: the answer asks for them (`challenge` is the WWW-Authenticate value)."""

    kind = "authentication_error"
    http_status = 401

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message)
        self.http_headers = {"WWW-Authenticate": challenge}


class RateLimitedError(RetryLaterError):
    """Logins refused for a while (lockout, or too many password checks at once)."""

    kind = "rate_limit_error"
    http_status = 429


class UnavailableError(RetryLaterError):
    """The server is loading its models or shutting down: nothing new is taken now."""

    kind = "unavailable_error"
    http_status = 503


class InternalError(WenmoError):
    """A bug: the answer names the id of the log entry with the traceback, never the traceback itself."""

    kind = "internal_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"内部错误 (internal error, id {request_id}); the server log has the detail")
        self.request_id = request_id

