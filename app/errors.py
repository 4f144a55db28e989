"""Wenmo's error tree: every failure a user can act on is one of these.

    WenmoError                      500  exit 1
    ├── InputError                  400  exit 2  bad input or settings: what was wrong, what is allowed, what to do
    │   ├── ConfigError             400  exit 2  invalid settings / ds_config.json, detected at start
    │   ├── BodyTooLargeError       413  exit 2  a request body or upload past --max-upload-mib
    │   └── BudgetExceededError     422  exit 2  a valid request whose work passes a per-request budget
    ├── OverloadedError             429  exit 1  the concurrency cap is full: "busy, retry shortly"
    ├── ModelUnavailableError       503  exit 1  a model cannot be found, downloaded or loaded
    ├── InferenceError              500  exit 1  the forward pass failed (e.g. out of memory after a retry)
    ├── DeadlineExceededError       504  exit 1  the request ran past --request-timeout-s; its work stopped
    ├── StoreFullError              507  exit 1  an upload or export that does not fit --max-file-store-mib
    └── CancelledError              499  exit 1  the client went away; its work stopped (nobody reads the answer)

Each class knows its HTTP status, its error `type` (the JSON body's) and its exit code; the surfaces (CLI, UI,
HTTP) render them at one boundary each. Library errors are translated into these at one boundary per layer.
This module imports nothing.
"""

from __future__ import annotations


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


class OverloadedError(WenmoError):
    kind = "overloaded_error"
    http_status = 429

    def __init__(self, message: str = "服务繁忙，请稍后重试 (busy, retry shortly)", retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailableError(WenmoError):
    kind = "model_unavailable_error"
    http_status = 503


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
