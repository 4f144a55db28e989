"""Readiness probe: ``GET /readyz`` on the app over plain HTTP (stdlib urllib, no extra dependency).

200 means ready; anything else (503 while loading or draining, a timeout, a refused connection) is a
failure with a short human-readable detail. This module must not import ``app``.
"""

from __future__ import annotations

import base64
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass

# Proxy variables must not reroute a probe of 127.0.0.1 through a corporate proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str  # "HTTP 200", "HTTP 503", "timeout after 5 s", "connection refused", …


class ReadinessProbe:
    """Probes ``http://host:port/readyz`` with a timeout; optional basic auth.

    The credentials are sent only when the app is configured with ``WENMO_AUTH`` so that a readiness
    route behind auth still works; an exempt route ignores the header. They never reach an event.
    """

    def __init__(self, host: str, port: int, timeout_s: float, basic_auth: str | None = None) -> None:
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{port}/readyz"
        self.timeout_s = timeout_s
        self._headers = {"Connection": "close"}
        if basic_auth:
            token = base64.b64encode(basic_auth.encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def __call__(self) -> HealthResult:
        request = urllib.request.Request(self.url, headers=self._headers, method="GET")
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                response.read(65536)  # drain the body so the server is not left with a half-read reply
                status = response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            detail = f"HTTP {exc.code}"
            if exc.code == 401:
                detail += ": /readyz asks for auth; exempt it in the app or set WENMO_AUTH for the launcher"
            return HealthResult(False, detail)
        except urllib.error.URLError as exc:
            return HealthResult(False, _reason(exc.reason, self.timeout_s))
        except TimeoutError:
            return HealthResult(False, f"timeout after {self.timeout_s:g} s")
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # A reset connection, a half-written reply (RemoteDisconnected, BadStatusLine) and the like.
            return HealthResult(False, _reason(exc, self.timeout_s))
        return HealthResult(status == 200, f"HTTP {status}")


def _reason(reason: object, timeout_s: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timeout after {timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return f"{type(reason).__name__}: {reason}"
