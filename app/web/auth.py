"""HTTP Basic authentication (RFC 7617) in front of the whole server, as pure ASGI middleware.

Why not Gradio's `auth=`: that is a login form with in-memory session tokens, so every restart logs
everybody out, `curl -u` does not work, and it has no limit on guessing. Basic auth is stateless: the
browser shows its own prompt, remembers the credentials and sends them again after a restart.

Credentials, in this order of precedence (all that are given are accepted):

- ``WENMO_AUTH=user:password`` (environment only; never a flag, where ``ps`` would show it);
- ``WENMO_AUTH_FILE=/path``: one ``user:secret`` per line, ``#`` comments and blank lines ignored. The
  secret is either the password itself or a salted hash ``pbkdf2_sha256$<iterations>$<salt>$<base64>``
  (Django's format); make one with ``python -m app hash-password --user NAME``;
- neither, under systemd: the ``wenmo-auth`` credential (``LoadCredential=``), i.e. the file
  ``$CREDENTIALS_DIRECTORY/wenmo-auth``, in the auth file's format (resolved in app/config.py);
- none of these: a random password is generated at first start and kept in ``<state_dir>/auth.txt`` (mode
  0600, same format as an auth file); the log says where it is, never what it is. Not in a Kubernetes pod:
  there every replica would generate its own, so the server refuses to start and asks for the Secret.

Passwords are compared in constant time, off the event loop, at most `auth_max_checks` at once (more logins at
the same moment get 429 at once, unhashed: a guesser cannot stall `/healthz` or the UI). Repeated failures from
one client address (`auth_max_failures` within 5 minutes) lock that address out for `auth_lockout_s`: every
login attempt from it gets the same 429 with Retry-After, and no password is checked, so no answer (status,
body, headers, time) tells a right password from a wrong one. What keeps working is proof of an earlier login
that guessing cannot produce: every successful login sets a session cookie (`wenmo_session`, HttpOnly,
SameSite=Strict, HMAC-SHA256 under a key made at start) valid for SESSION_S; a request carrying a valid one
passes even from a locked address, so a guesser cannot lock real users out. `/healthz` and `/readyz` answer
without credentials (they reveal nothing else).

The client address is the TCP peer's; `X-Forwarded-For` names it only when the peer is one of the proxies the
operator lists in `trusted_proxies` (uvicorn applies it, configured in app/web/server.py; see
`parse_trusted_proxies`).

Imports nothing from the web stack: the middleware speaks bare ASGI.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from app.config import Settings, describe_auth_file
from app.errors import AuthenticationError, ConfigError, RateLimitedError
from app.web.boundary import send_error

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
MAX_ADDRESSES = 10_000  # addresses the limiter remembers (failures and lockouts each); oldest forgotten first
VERIFIED_CACHE = 1024  # verified Authorization headers remembered (keyed hashes), so PBKDF2 runs once per login

# The session cookie a successful login sets: proof of that login which a guesser cannot produce. Valid for
# SESSION_S after the login (a working day); after that the browser's Basic header is checked again, which
# needs an address that is not locked out. The key is made at start, so a restart ends every session.
SESSION_COOKIE = "wenmo_session"
SESSION_S = 12 * 3600
MAX_COOKIE_CHARS = 512  # longer values are not ours: ignored unread


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
                "make one with `python -m app hash-password --user NAME`"
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


def load_credentials(auth: str, auth_file: str, state_dir: Path,
                     may_generate: bool = True) -> tuple[list[Secret], str]:
    """The accepted credentials and a one-line description of where they came from (no secrets). Without
    `may_generate` (several replicas), no credentials given is a ConfigError instead of a generated password."""
    found: list[Secret] = []
    origin = []
    if auth:
        found.append(parse_credential_line(auth, "WENMO_AUTH"))
        origin.append("WENMO_AUTH")
    if auth_file:
        found.extend(read_auth_file(Path(auth_file).expanduser()))
        origin.append(describe_auth_file(auth_file))
    if not found and not may_generate:
        raise ConfigError("no credentials given, and in Kubernetes (KUBERNETES_SERVICE_HOST is set) each replica "
                          "would generate a password of its own: mount the Secret as a file and set "
                          "WENMO_AUTH_FILE to it (README \"Several replicas: what changes\")")
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


def parse_trusted_proxies(text: str) -> list[str]:
    """`trusted_proxies` as the list uvicorn's `forwarded_allow_ips` takes (addresses and CIDR networks).

    uvicorn silently treats an entry it cannot parse as a literal host name that never matches, so a typo would
    quietly stop (or never start) the forwarding the operator asked for: every entry is checked here instead.
    """
    where = "--trusted-proxies / WENMO_TRUSTED_PROXIES"
    found: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item == "*":
            raise ConfigError(f"{where}: '*' is not accepted; name the proxies' addresses or networks "
                              "(e.g. 10.0.0.5,192.168.0.0/24), or 0.0.0.0/0,::/0 if only proxies can reach this port")
        try:
            found.append(str(ipaddress.ip_network(item)) if "/" in item else str(ipaddress.ip_address(item)))
        except ValueError as e:
            raise ConfigError(f"{where}: {item!r} is not an IP address or network ({e}); give addresses or CIDR "
                              "networks separated by commas, e.g. 127.0.0.1,10.0.0.0/8 (empty: trust none)") from None
    return found


# ---- checking a request ------------------------------------------------------------------------------
class FailureLimiter:
    """Counts wrong credentials per client address in a sliding window; bounded memory; thread-safe."""

    def __init__(self, max_failures: int = Settings.auth_max_failures, window_s: float = WINDOW_S,
                 lockout_s: float = Settings.auth_lockout_s, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # Insertion order = lockout order, and every lockout lasts lockout_s, so the ones that end first are
        # at the front: expired entries and then the oldest are evicted from there.
        self._locked_until: OrderedDict[str, float] = OrderedDict()
        self.lockouts = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> FailureLimiter:
        return cls(max_failures=settings.auth_max_failures, lockout_s=settings.auth_lockout_s, **kwargs)

    def retry_after_s(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        with self._lock:
            return self._retry_after_s(address, self.clock())

    def _retry_after_s(self, address: str, now: float) -> int:
        until = self._locked_until.get(address)
        if until is None:
            return 0
        left = until - now
        if left <= 0:
            del self._locked_until[address]
            return 0
        return max(1, int(left + 0.999))

    def record_failure(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            if self._retry_after_s(address, now):
                return  # already locked (a check that was running when the lockout began): not extended
            times = self._failures.pop(address, None) or deque()
            times.append(now)
            while times and times[0] < now - self.window_s:
                times.popleft()
            self._failures[address] = times  # re-inserted last: the oldest address is evicted first
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
            if len(times) < self.max_failures:
                return
            self._failures.pop(address, None)
            self._locked_until[address] = now + self.lockout_s
            self._evict_lockouts(now)
            self.lockouts += 1
        log.warning("event=auth_lockout address=%s failures=%d seconds=%g", address, len(times), self.lockout_s)

    def _evict_lockouts(self, now: float) -> None:
        locked = self._locked_until
        while locked and next(iter(locked.values())) <= now:
            locked.popitem(last=False)
        # Still too many: the lockouts that end soonest go. Forgetting one needs MAX_ADDRESSES newer lockouts,
        # i.e. that many addresses each failing auth_max_failures times.
        while len(locked) > self.max_addresses:
            locked.popitem(last=False)

    def remembered(self) -> int:
        """Addresses remembered (with failures or locked out): bounded by 2 × max_addresses."""
        with self._lock:
            return len(self._failures) + len(self._locked_until)


class SessionCookies:
    """Signed proof of a login: `b64(user).issued.b64(HMAC-SHA256(key, b64(user).issued))`.

    The key lives only in this process, so the proof cannot be made without a login here, and a restart ends
    every session. `issued` is on the process's monotonic clock (meaningless elsewhere, immune to clock steps).
    """

    def __init__(self, lifetime_s: float = SESSION_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._key = secrets.token_bytes(32)

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def issue(self, user: str) -> str:
        payload = f"{base64.urlsafe_b64encode(user.encode('utf-8')).decode('ascii').rstrip('=')}.{int(self.clock())}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, value: str) -> str | None:
        """The user of a valid, unexpired cookie value; None for anything else (forged, altered, old)."""
        if len(value) > MAX_COOKIE_CHARS:
            return None
        name, _, rest = value.partition(".")
        issued, _, mac = rest.partition(".")
        payload = f"{name}.{issued}"
        if not payload.isascii() or not hmac.compare_digest(self._mac(payload).encode(), mac.encode("utf-8")):
            return None
        age = self.clock() - int(issued)  # an int: signed by us
        if not 0 <= age < self.lifetime_s:
            return None
        return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode("utf-8")

    def set_cookie_header(self, value: str, *, secure: bool) -> bytes:
        # No Secure flag on plain http (behind a TLS-terminating proxy without X-Forwarded-Proto, or on a
        # loopback port): the browser would then never send the cookie back.
        flags = f"; Max-Age={int(self.lifetime_s)}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
        return f"{SESSION_COOKIE}={value}{flags}".encode("ascii")


class Verdict(NamedTuple):
    """The authenticator's answer: 200 (with the user, and a session cookie value to set after a Basic login),
    401 (ask for credentials) or 429 (`why`: LOCKED out or BUSY, with Retry-After)."""

    status: int
    user: str | None = None
    retry_after_s: int = 0
    why: str = ""
    session: str | None = None


LOCKED, BUSY = "locked", "busy"


class Authenticator:
    """Decides on a request's session cookies and `Authorization` header, in this order:

    1. a valid session cookie of a user who still exists: pass (even from a locked-out address);
    2. a locked-out address: 429, whatever else the request carries (nothing is verified);
    3. no or malformed Basic credentials: 401;
    4. a header verified before (remembered as a keyed hash, never the password): pass, new session cookie;
    5. otherwise a password check in the bounded pool (429 BUSY at once when `max_checks` run already); a
       failure counts towards the lockout; a success is remembered and gets a session cookie.
    """

    def __init__(self, credentials: Iterable[Secret], limiter: FailureLimiter | None = None, *,
                 max_checks: int = Settings.auth_max_checks, sessions: SessionCookies | None = None) -> None:
        self.limiter = limiter if limiter is not None else FailureLimiter()
        self.sessions = sessions if sessions is not None else SessionCookies()
        self.max_checks = max_checks
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._checking = 0
        self._pool = ThreadPoolExecutor(max_workers=max_checks, thread_name_prefix="auth-check")
        self.failures = 0
        self.busy = 0
        self.set_credentials(credentials)

    def set_credentials(self, credentials: Iterable[Secret]) -> None:
        """Accept these credentials from now on; sessions and remembered logins of users no longer listed end."""
        found = list(credentials)
        # An unknown user costs as much as a known one (the slowest hash in use), so timing does not
        # reveal which users exist.
        iterations = max((c.iterations for c in found if c.plain is None), default=0)
        decoy = hash_password(secrets.token_hex(8), iterations=iterations) if iterations else secrets.token_hex(8)
        with self._lock:
            self.credentials = found
            self._users = frozenset(c.user for c in found)
            self._decoy = Secret.parse("decoy", decoy, "decoy")
            self._verified.clear()

    async def check(self, header: bytes | None, address: str, cookies: Sequence[str] = ()) -> Verdict:
        for value in cookies[:4]:  # a few (a stale one may come first); never a list an attacker makes long
            user = self.sessions.verify(value)
            if user is not None and user in self._users:
                return Verdict(200, user)
        wait = self.limiter.retry_after_s(address)
        if wait:
            return Verdict(429, retry_after_s=wait, why=LOCKED)
        if not header:
            return Verdict(401)
        user = self._remembered(header)
        if user is None:
            parsed = parse_basic(header)
            if parsed is None:
                return Verdict(401)  # not a password guess (another scheme, broken encoding): not counted
            job = self._start_check(*parsed)
            if job is None:
                self.busy += 1
                return Verdict(429, retry_after_s=1, why=BUSY)
            user = await asyncio.wrap_future(job)
            # Other attempts may have locked the address while this one was checked; from then on no answer
            # may depend on the password, this one's included.
            wait = self.limiter.retry_after_s(address)
            if user is None:
                self.failures += 1
                if not wait:
                    self.limiter.record_failure(address)
                    wait = self.limiter.retry_after_s(address)
                return Verdict(429, retry_after_s=wait, why=LOCKED) if wait else Verdict(401)
            if wait:
                return Verdict(429, retry_after_s=wait, why=LOCKED)
            self._remember(header, user)
        return Verdict(200, user, session=self.sessions.issue(user))

    def _start_check(self, user: str, password: str) -> Any:
        """A future for `_verify` in the pool, or None when `max_checks` are running already. The slot is
        freed when the hash is done, not when the request gives up: it bounds CPU, not waiting requests."""
        with self._lock:
            if self._checking >= self.max_checks:
                return None
            self._checking += 1
        try:
            job = self._pool.submit(self._verify, user, password)
        except BaseException:
            self._end_check(None)
            raise
        job.add_done_callback(self._end_check)
        return job

    def _end_check(self, _job: Any) -> None:
        with self._lock:
            self._checking -= 1

    def _remembered(self, header: bytes) -> str | None:
        key = hmac.new(self._key, header, hashlib.sha256).digest()
        with self._lock:
            user = self._verified.get(key)
            if user is not None:
                self._verified.move_to_end(key)
            return user

    def _remember(self, header: bytes, user: str) -> None:
        key = hmac.new(self._key, header, hashlib.sha256).digest()
        with self._lock:
            self._verified[key] = user
            while len(self._verified) > VERIFIED_CACHE:
                self._verified.popitem(last=False)

    def _verify(self, user: str, password: str) -> str | None:
        """Runs in the pool. Every entry is looked at and user names compare in constant time."""
        credentials, decoy = self.credentials, self._decoy
        ok = False
        matched = False
        for cred in credentials:
            if hmac.compare_digest(cred.user.encode("utf-8"), user.encode("utf-8")):
                matched = True
                ok = cred.matches(password) or ok
        if not matched:
            decoy.matches(password)
        return user if ok else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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


def split_session_cookies(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """(our session cookie values, the headers with them taken out). The app behind never sees the session
    cookie, so nothing there can log or echo it."""
    values: list[str] = []
    rest: list[tuple[bytes, bytes]] = []
    prefix = SESSION_COOKIE.encode("ascii") + b"="
    for name, value in headers:
        if name != b"cookie":
            rest.append((name, value))
            continue
        kept = []
        for pair in value.split(b";"):
            pair = pair.strip()
            if pair.startswith(prefix):
                values.append(pair[len(prefix):].decode("latin-1"))
            elif pair:
                kept.append(pair)
        if kept:
            rest.append((name, b"; ".join(kept)))
    return values, rest


Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BasicAuthMiddleware:
    """Every HTTP and WebSocket request needs a session cookie or valid credentials, except GET/HEAD on the
    probes."""

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
        raw_headers = list(scope.get("headers") or [])
        header = next((v for k, v in raw_headers if k == b"authorization"), None)
        cookies, headers = split_session_cookies(raw_headers)
        address = (scope.get("client") or ("unknown", 0))[0]
        verdict = await self.auth.check(header, address, cookies)
        if verdict.status == 200:
            if verdict.session is not None and scope["type"] == "http":
                send = with_header(send, b"set-cookie", self.auth.sessions.set_cookie_header(
                    verdict.session, secure=scope.get("scheme") == "https"))
            await self.app(dict(scope, user=verdict.user, headers=headers), receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        accept = next((v for k, v in raw_headers if k == b"accept"), b"")
        await send_refusal(send, verdict.status, verdict.retry_after_s, html=b"text/html" in accept, why=verdict.why)


def with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), (name, value)])
        await send(message)

    return sending


async def send_refusal(send: Send, status: int, retry_after: int, *, html: bool, why: str = LOCKED) -> None:
    if status == 401:
        error: Any = AuthenticationError(
            "需要登录 (authentication required): give a user name and password (HTTP basic auth)", CHALLENGE)
    elif why == BUSY:
        error = RateLimitedError(f"同时登录的请求过多 (too many logins at once): the server checks a few passwords at "
                                 f"a time; retry in {retry_after} s", retry_after)
    else:
        error = RateLimitedError(f"登录失败次数过多 (too many failed logins from your address): wait {retry_after} s "
                                 "and try again", retry_after)
    await send_error(send, error, html_page=html)
