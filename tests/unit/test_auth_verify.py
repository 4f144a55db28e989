"""Authenticator's decision and the middleware's probe exemption, driven through bare calls: no server.

Both guard a behaviour that only a server test noticed before: a password is accepted only together with
its own user name, and only GET/HEAD reach /healthz and /readyz without credentials.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures

import pytest

from app.web.auth import (
    BUSY,
    LOCKED,
    Authenticator,
    BasicAuthMiddleware,
    FailureLimiter,
    Secret,
    hash_password,
    parse_basic,
)

USERS = [Secret("alice", plain="right"), Secret.parse("bob", hash_password("bobs", iterations=10), "test")]


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def run(coro):
    # In a thread of its own: an earlier test in the same session (Playwright's sync API) can leave an event
    # loop running in this one, where asyncio.run() refuses to start.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def auth():
    a = Authenticator(USERS, FailureLimiter(max_failures=3, lockout_s=60, clock=Clock()))
    yield a
    a.close()


@pytest.mark.parametrize("user, password", [("alice", "right"), ("bob", "bobs")])
def test_each_user_logs_in_with_their_own_password(auth, user, password):
    verdict = run(auth.check(basic(user, password), "10.0.0.1"))
    assert (verdict.status, verdict.user) == (200, user)
    assert auth.sessions.verify(verdict.session) == user
    assert auth.failures == 0


@pytest.mark.parametrize("user, password", [
    ("mallory", "right"),  # a user that does not exist, with alice's password
    ("bob", "right"),  # another user's password (bob's own is a hash)
    ("alice", "bobs"),
    ("Alice", "right"),  # user names are compared exactly
    ("alice", "wrong"),
])
def test_a_password_counts_only_with_its_own_user_name(auth, user, password):
    assert auth._verify(user, password) is None
    verdict = run(auth.check(basic(user, password), "10.0.0.1"))
    assert (verdict.status, verdict.user, verdict.session) == (401, None, None)
    assert auth.failures == 1 and auth.limiter.retry_after_s("10.0.0.1") == 0


def test_the_failure_that_reaches_the_limit_locks_the_address(auth):
    verdicts = [run(auth.check(basic("mallory", "right"), "10.0.0.1")) for _ in range(4)]
    assert [v.status for v in verdicts] == [401, 401, 429, 429]
    assert [v.why for v in verdicts[2:]] == [LOCKED, LOCKED] and verdicts[3].retry_after_s == 60
    # the right password from the locked address is not checked; another address is unaffected
    assert run(auth.check(basic("alice", "right"), "10.0.0.1")).status == 429
    assert auth.failures == 3
    assert run(auth.check(basic("alice", "right"), "10.0.0.2")).status == 200


def test_a_session_cookie_passes_a_locked_address_and_a_forged_one_does_not(auth):
    session = run(auth.check(basic("alice", "right"), "10.0.0.1")).session
    for _ in range(3):
        run(auth.check(basic("alice", "x"), "10.0.0.1"))
    assert run(auth.check(None, "10.0.0.1", [session])) == (200, "alice", 0, "", None)
    forged = session[:-2] + ("AA" if not session.endswith("AA") else "BB")
    assert run(auth.check(None, "10.0.0.1", [forged])).status == 429


def test_no_or_malformed_credentials_are_401_and_not_counted(auth):
    for header in (None, b"", b"Bearer abc", b"Basic !!!", b"Basic " + base64.b64encode(b"no-colon")):
        assert run(auth.check(header, "10.0.0.1")).status == 401
    assert auth.failures == 0 and auth.limiter.retry_after_s("10.0.0.1") == 0


def test_a_full_check_pool_answers_busy_at_once():
    a = Authenticator(USERS, max_checks=1)
    try:
        with a._lock:
            a._checking = 1  # one check already running
        verdict = run(a.check(basic("alice", "right"), "10.0.0.1"))
        assert (verdict.status, verdict.why, verdict.retry_after_s) == (429, BUSY, 1)
        assert a.busy == 1 and a.failures == 0
    finally:
        a.close()


def test_parse_basic():
    assert parse_basic(basic("alice", "pa:ss")) == ("alice", "pa:ss")  # the password may hold ':'
    assert parse_basic(b"basic " + base64.b64encode("张三:密码".encode())) == ("张三", "密码")
    assert parse_basic(b"Digest abc") is None
    assert parse_basic(b"Basic " + base64.b64encode(b"\xff:x")) is None


# -- the middleware's probe exemption ---------------------------------------------------------------------

def call(app: BasicAuthMiddleware, method: str, path: str, header: bytes | None = None) -> tuple[int, list]:
    sent: list[dict] = []
    reached: list[str] = []

    async def inner(scope, receive, send) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    app.app = inner
    headers = [(b"authorization", header)] if header else []
    scope = {"type": "http", "method": method, "path": path, "client": ("10.0.0.9", 5000), "headers": headers}
    run(app(scope, receive, send))
    return sent[0]["status"], reached


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_get_and_head_without_credentials(auth, path):
    app = BasicAuthMiddleware(None, auth)
    for method in ("GET", "HEAD"):
        assert call(app, method, path) == (200, [path])


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_the_probes_need_credentials(auth, path, method):
    app = BasicAuthMiddleware(None, auth)
    assert call(app, method, path) == (401, [])  # refused before the app sees it
    assert call(app, method, path, basic("alice", "right")) == (200, [path])


def test_other_paths_need_credentials_for_get_too(auth):
    app = BasicAuthMiddleware(None, auth)
    assert call(app, "GET", "/metrics") == (401, [])
    assert call(app, "GET", "/healthz/x") == (401, [])
