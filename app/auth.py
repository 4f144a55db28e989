"""HTTP Basic authentication (RFC 7617) in front of the whole server, as pure ASGI middleware.

Why not Gradio's `auth=`: that is a login form with in-memory session tokens, so every restart logs
everybody out, `curl -u` does not work, and it has no limit on guessing. Basic auth is stateless: the
browser shows its own prompt, remembers the credentials and sends them again after a restart.

Credentials, in this order of precedence (all that are given are accepted):

- ``WENMO_AUTH=user:password`` (environment only; never a flag, where ``ps`` would show it);
- ``WENMO_AUTH_FILE=/path``: one ``user:secret`` per line, ``#`` comments and blank lines ignored. The
  secret is either the password itself or a salted hash ``pbkdf2_sha256$<iterations>$<salt>$<base64>``
  (Django's format); make one with ``python -m app.auth hash --user NAME``;
- neither, under systemd: the ``wenmo-auth`` credential (``LoadCredential=``), i.e. the file
  ``$CREDENTIALS_DIRECTORY/wenmo-auth``, in the auth file's format (resolved in app/config.py);
- none of these: a random password is generated at first start and kept in ``<state_dir>/auth.txt`` (mode
  0600, same format as an auth file); the log says where it is, never what it is.

Passwords are compared in constant time. Repeated failures from one client address (`auth_max_failures`
within 5 minutes) are answered 429 with Retry-After for `auth_lockout_s`; credentials already verified keep
working meanwhile, so a guesser cannot lock real users out. `/healthz` and `/readyz` answer without
credentials (they reveal nothing else).

Imports nothing from the web stack: the middleware speaks bare ASGI.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import stat
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import Settings, describe_auth_file
from app.errors import ConfigError

log = logging.getLogger(__name__)

REALM = "Wenmo"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
GENERATED_FILE = "auth.txt"
GENERATED_USER = "wenmo"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})

# Failure limit per client address: `auth_max_failures` wrong credentials within WINDOW_S lock the address
# out of new logins for `auth_lockout_s` (both settings, defaults in app/config.py).
WINDOW_S = 300.0


# ---- secrets -----------------------------------------------------------------------------------------
def hash_password(password: str, *, iterations: int = HASH_ITERATIONS, salt: str | None = None) -> str:
    """`pbkdf2_sha256$iterations$salt$base64(sha256-pbkdf2)`, the format Django uses."""
    salt = salt or secrets.token_urlsafe(16)
    if "$" in salt:
        raise ValueError("salt must not contain '$'")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), iterations)
    return f"{HASH_SCHEME}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


@dataclass(frozen=True)
class Secret:
    """One user's stored secret: a plain password or a PBKDF2 hash."""

    user: str
    plain: str | None = field(default=None, repr=False)
    iterations: int = 0
    salt: str = ""
    digest: bytes = field(default=b"", repr=False)

    @classmethod
    def parse(cls, user: str, secret: str, where: str) -> Secret:
        if not secret.startswith(HASH_SCHEME + "$"):
            if not secret:
                raise ConfigError(f"{where}: the password for user {user!r} is empty; give one after the ':'")
            return cls(user, plain=secret)
        parts = secret.split("$")
        try:
            if len(parts) != 4:
                raise ValueError
            iterations = int(parts[1])
            digest = base64.b64decode(parts[3], validate=True)
            if iterations < 1 or not parts[2] or not digest:
                raise ValueError
        except (ValueError, binascii.Error):
            raise ConfigError(
                f"{where}: the hash for user {user!r} is not {HASH_SCHEME}$<iterations>$<salt>$<base64>; "
                "make one with `python -m app.auth hash --user NAME`"
            ) from None
        return cls(user, iterations=iterations, salt=parts[2], digest=digest)

    def matches(self, password: str) -> bool:
        if self.plain is not None:
            return hmac.compare_digest(password.encode("utf-8"), self.plain.encode("utf-8"))
        got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), self.salt.encode("utf-8"), self.iterations)
        return hmac.compare_digest(got, self.digest)


def parse_credential_line(line: str, where: str) -> Secret:
    user, sep, secret = line.partition(":")
    if not sep or not user.strip():
        raise ConfigError(f"{where}: expected `user:password` or `user:{HASH_SCHEME}$…`, got no 'user:' part")
    return Secret.parse(user.strip(), secret.strip(), where)


def read_auth_file(path: Path) -> list[Secret]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"WENMO_AUTH_FILE={path}: cannot read it ({e.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"WENMO_AUTH_FILE={path}: not UTF-8 text; save it as UTF-8") from None
    secrets_ = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        secrets_.append(parse_credential_line(line, f"{path}, line {number}"))
    if not secrets_:
        raise ConfigError(f"WENMO_AUTH_FILE={path}: no `user:password` lines in it; add at least one")
    return secrets_


def ensure_generated_password(state_dir: Path) -> Path:
    """The generated credentials file, created at first start with mode 0600 (and kept at 0600)."""
    path = state_dir / GENERATED_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # O_EXCL + mode at creation: the password is never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"# Wenmo login, generated {time.strftime('%Y-%m-%d %H:%M:%S')}; user:password\n")
            f.write(f"{GENERATED_USER}:{secrets.token_urlsafe(18)}\n")
        log.warning("event=password_generated user=%s file=%s (mode 0600; read it with `cat %s`)",
                    GENERATED_USER, path, path)
    else:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("event=password_file_mode_fixed file=%s was %o, now 600", path, mode)
        log.info("event=password_file user=%s file=%s", GENERATED_USER, path)
    return path


def load_credentials(auth: str, auth_file: str, state_dir: Path) -> tuple[list[Secret], str]:
    """The accepted credentials and a one-line description of where they came from (no secrets)."""
    found: list[Secret] = []
    origin = []
    if auth:
        found.append(parse_credential_line(auth, "WENMO_AUTH"))
        origin.append("WENMO_AUTH")
    if auth_file:
        found.extend(read_auth_file(Path(auth_file).expanduser()))
        origin.append(describe_auth_file(auth_file))
    if not found:
        path = ensure_generated_password(state_dir)
        found = read_auth_file(path)
        origin.append(f"generated password in {path}")
    return found, ", ".join(origin)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- checking a request ------------------------------------------------------------------------------
class FailureLimiter:
    """Counts wrong credentials per client address in a sliding window; bounded memory."""

    def __init__(self, max_failures: int = Settings.auth_max_failures, window_s: float = WINDOW_S,
                 lockout_s: float = Settings.auth_lockout_s, max_addresses: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self.lockouts = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> FailureLimiter:
        return cls(max_failures=settings.auth_max_failures, lockout_s=settings.auth_lockout_s, **kwargs)

    def retry_after_s(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        until = self._locked_until.get(address)
        if until is None:
            return 0
        left = until - self.clock()
        if left <= 0:
            del self._locked_until[address]
            return 0
        return max(1, int(left + 0.999))

    def record_failure(self, address: str) -> None:
        now = self.clock()
        times = self._failures.pop(address, None) or deque()
        times.append(now)
        while times and times[0] < now - self.window_s:
            times.popleft()
        self._failures[address] = times  # re-inserted last: the oldest address is evicted first
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        if len(times) >= self.max_failures:
            self._locked_until[address] = now + self.lockout_s
            self._failures.pop(address, None)
            self.lockouts += 1
            log.warning("event=auth_lockout address=%s failures=%d seconds=%g", address, len(times), self.lockout_s)


class Authenticator:
    """Decides on an `Authorization` header. Verified headers are remembered (as keyed hashes, never the
    password) so PBKDF2 runs once per login, not once per static file."""

    def __init__(self, credentials: Iterable[Secret], limiter: FailureLimiter | None = None) -> None:
        self.credentials = list(credentials)
        self.limiter = limiter or FailureLimiter()
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self.failures = 0
        # An unknown user costs as much as a known one (the slowest hash in use), so timing does not
        # reveal which users exist.
        iterations = max((c.iterations for c in self.credentials if c.plain is None), default=0)
        decoy = hash_password(secrets.token_hex(8), iterations=iterations) if iterations else secrets.token_hex(8)
        self._decoy = Secret.parse("decoy", decoy, "decoy")

    def _remembered(self, header: bytes) -> str | None:
        key = hmac.new(self._key, header, hashlib.sha256).digest()
        user = self._verified.get(key)
        if user is not None:
            self._verified.move_to_end(key)
        return user

    def _remember(self, header: bytes, user: str) -> None:
        self._verified[hmac.new(self._key, header, hashlib.sha256).digest()] = user
        while len(self._verified) > 1024:
            self._verified.popitem(last=False)

    def check(self, header: bytes | None, address: str) -> tuple[int, str | None, int]:
        """(status, user, retry_after_s): 200 with the user, 401 (ask again), or 429 (locked out)."""
        if header:
            user = self._remembered(header)
            if user is not None:
                return 200, user, 0
        wait = self.limiter.retry_after_s(address)
        if wait:
            return 429, None, wait
        if not header:
            return 401, None, 0
        parsed = parse_basic(header)
        if parsed is None:
            return 401, None, 0  # not a password guess (another scheme, broken encoding): not counted
        user = self._verify(*parsed)
        if user is None:
            self.failures += 1
            self.limiter.record_failure(address)
            wait = self.limiter.retry_after_s(address)
            return (429, None, wait) if wait else (401, None, 0)
        self._remember(header, user)
        return 200, user, 0

    def _verify(self, user: str, password: str) -> str | None:
        ok = False
        matched = False
        for cred in self.credentials:
            # Every entry is looked at; the user name comparison is constant-time as well.
            if hmac.compare_digest(cred.user.encode("utf-8"), user.encode("utf-8")):
                matched = True
                ok = cred.matches(password) or ok
        if not matched:
            self._decoy.matches(password)
        return user if ok else None


def parse_basic(header: bytes) -> tuple[str, str] | None:
    """(user, password) from `Basic base64(user:password)` (UTF-8, RFC 7617), or None."""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BasicAuthMiddleware:
    """Every HTTP and WebSocket request needs valid credentials, except GET/HEAD on the probes."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] in EXEMPT_PATHS and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        address = (scope.get("client") or ("unknown", 0))[0]
        status, user, retry_after = self.auth.check(header, address)
        if status == 200:
            await self.app(dict(scope, user=user), receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        await send_refusal(send, status, retry_after, html=b"text/html" in accept)


async def send_refusal(send: Send, status: int, retry_after: int, *, html: bool) -> None:
    if status == 401:
        message = "需要登录 (authentication required): give a user name and password (HTTP basic auth)"
        headers = [(b"www-authenticate", CHALLENGE.encode())]
        kind = "authentication_error"
    else:
        message = (f"登录失败次数过多 (too many failed logins from your address): wait {retry_after} s "
                   "and try again")
        headers = [(b"retry-after", str(retry_after).encode())]
        kind = "rate_limit_error"
    if html:
        body = (f"<!doctype html><meta charset=utf-8><title>Wenmo</title><p>{message}</p>").encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": {"message": message, "type": kind}}, ensure_ascii=False).encode()
        ctype = b"application/json"
    headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- `python -m app.auth hash` -----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.auth",
                                description="Make a line for WENMO_AUTH_FILE (user:salted-hash).")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hash", help="read a password (prompt, or one line on stdin) and print user:hash")
    h.add_argument("--user", default=GENERATED_USER, help=f"user name (default {GENERATED_USER})")
    h.add_argument("--iterations", type=int, default=HASH_ITERATIONS, help="PBKDF2 iterations")
    args = p.parse_args(argv)
    if ":" in args.user or not args.user.strip():
        print("error: the user name must be non-empty and must not contain ':'", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the two passwords differ; run it again", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("error: the password is empty; give one", file=sys.stderr)
        return 2
    print(f"{args.user}:{hash_password(password, iterations=args.iterations)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
