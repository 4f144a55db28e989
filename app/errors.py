"""Wenmo's error tree: every failure a user can act on is one of these.

    WenmoError
    ├── InputError            bad input or settings: say what was wrong, what is allowed, what to do
    │   └── ConfigError       invalid settings / ds_config.json, detected at start
    ├── OverloadedError       the concurrency cap is full: "busy, retry shortly"
    ├── ModelUnavailableError a model cannot be found, downloaded or loaded
    └── InferenceError        the forward pass failed (e.g. out of memory after a retry)

Library errors are translated into these at one boundary per layer; the surfaces (CLI, UI, HTTP)
turn them into exit codes, toasts and 4xx/5xx answers. This module imports nothing.
"""

from __future__ import annotations


class WenmoError(Exception):
    """Base class; `message` is safe to show to the user."""

    kind = "wenmo_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(WenmoError):
    kind = "invalid_request_error"


class ConfigError(InputError):
    kind = "config_error"


class OverloadedError(WenmoError):
    kind = "overloaded_error"

    def __init__(self, message: str = "服务繁忙，请稍后重试 (busy, retry shortly)", retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailableError(WenmoError):
    kind = "model_unavailable_error"


class InferenceError(WenmoError):
    kind = "inference_error"
