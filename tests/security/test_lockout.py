"""Item 1: the lockout must not be an oracle. Once an address is locked out, every login attempt from it gets the
same 429 (status, headers, body), whether the password is right or wrong; only a session cookie from a login
before the lockout (signed by the server, HttpOnly) still passes, and a forged or altered one does not.

Each test talks from a loopback address of its own (127.0.0.x, all routed to the server on 127.0.0.1), so one
test's lockout does not touch another's.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import time

import httpx
import pytest
from server_harness import PASSWORD, USER, WenmoServer

from app.web.auth import Authenticator, Secret

SESSION_COOKIE = "wenmo_session"  # the README's names and lifetime, as a client sees them
SESSION_S = 12 * 3600
MAX_FAILURES = 3
LOCKOUT_S = 30


@pytest.fixture(scope="module")
def strict(server, tmp_path_factory):
    """3 wrong logins lock an address out for 30 s (long enough to compare answers without racing it)."""
    s = WenmoServer(tmp_path_factory.mktemp("lockout") / "state",
                    ["--auth-max-failures", str(MAX_FAILURES), "--auth-lockout-s", str(LOCKOUT_S)],
                    template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


def from_address(server: WenmoServer, address: str, **kwargs) -> httpx.Client:
    """A client whose connections come from `address` (the server sees it as the client address)."""
    return httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), timeout=30,
                        **kwargs)


def attempt(server: WenmoServer, address: str, password: str, *, accept: str = "application/json",
            cookie: str | None = None) -> httpx.Response:
    """One login attempt with a fresh client: no cookies unless given."""
    headers = {"Accept": accept}
    if cookie is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    with from_address(server, address) as c:
        return c.get("/metrics", auth=(USER, password), headers=headers)


def answer(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Everything a client sees except the Date header (the clock, not the server's decision)."""
    return r.status_code, sorted((k, v) for k, v in r.headers.multi_items() if k != "date"), r.content


def lock_out(server: WenmoServer, address: str) -> None:
    codes = [attempt(server, address, f"guess-{i}").status_code for i in range(MAX_FAILURES)]
    assert codes == [401] * (MAX_FAILURES - 1) + [429], codes


def session_cookie(r: httpx.Response) -> tuple[str, str]:
    """(value, the Set-Cookie line) of the session cookie a response sets."""
    lines = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE + "=")]
    assert len(lines) == 1, r.headers
    return lines[0].split(";")[0].split("=", 1)[1], lines[0]


def test_a_locked_address_gets_the_same_answer_for_the_right_password_as_for_a_wrong_one(strict):
    address = "127.0.0.11"
    with from_address(strict, address, auth=(USER, PASSWORD)) as browser:
        assert browser.get("/metrics").status_code == 200  # logged in before the attack: the header is known
        lock_out(strict, address)
        for accept in ("application/json", "text/html"):
            # Retry-After counts down in whole seconds: compare the right password with wrong ones on either
            # side of it, and only a pair of wrong ones that agree (same second) is the reference.
            for _ in range(5):
                before = answer(attempt(strict, address, "wrong-before", accept=accept))
                right = answer(attempt(strict, address, PASSWORD, accept=accept))
                after = answer(attempt(strict, address, "wrong-after", accept=accept))
                if before == after:
                    break
            assert before == after, "Retry-After kept changing between three quick requests"
            assert right == before
            status, headers, _body = right
            assert status == 429 and 1 <= int(dict(headers)["retry-after"]) <= LOCKOUT_S
            assert not any(k == "set-cookie" for k, _ in headers)
        # the browser logged in before the lockout: its session cookie still lets it in
        assert browser.get("/metrics").status_code == 200
        assert SESSION_COOKIE in browser.cookies


def test_a_login_sets_a_signed_httponly_session_cookie_that_outlasts_the_lockout(strict):
    address = "127.0.0.12"
    first = attempt(strict, address, PASSWORD)
    assert first.status_code == 200
    value, line = session_cookie(first)
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in line.split(";")[1:]}
    assert set(flags) == {"max-age", "path", "httponly", "samesite"}  # no Secure on plain http
    assert flags["path"] == "Path=/" and flags["samesite"] == "SameSite=Strict"
    assert flags["max-age"] == f"Max-Age={SESSION_S}"
    lock_out(strict, address)
    wrong = answer(attempt(strict, address, "still-guessing"))
    # the cookie alone, or with a wrong or the right password, passes from the locked address
    for password in ("still-guessing", PASSWORD):
        r = attempt(strict, address, password, cookie=value)
        assert r.status_code == 200 and "wenmo_in_flight" in r.text
        assert not any(k == "set-cookie" for k, _ in r.headers.multi_items())  # a session is not re-issued
    with from_address(strict, address, cookies={SESSION_COOKIE: value}) as c:
        assert c.get("/metrics").status_code == 200
    # anything that is not the server's own signature is no proof: the same 429 as a wrong password
    name, issued, mac = value.split(".")
    other_user = base64.urlsafe_b64encode(b"admin").decode().rstrip("=")
    forged = [
        f"{name}.{issued}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # altered signature
        f"{name}.{int(issued) + 3600}.{mac}",  # a later login time under the old signature
        f"{other_user}.{issued}.{mac}",  # another user under the old signature
        f"{name}.{issued}.",  # no signature
        "garbage",
    ]
    for bad in forged:
        for password in ("still-guessing", PASSWORD):
            r = attempt(strict, address, password, cookie=bad)
            got = answer(r)
            assert got[0] == 429, (bad, got)
            if got[1] == wrong[1]:  # same second of Retry-After: byte for byte the wrong password's answer
                assert got == wrong
    assert value not in strict.logs()  # the session cookie is never logged


def test_the_lockout_ends_and_the_right_password_logs_in_again(start_server):
    s = start_server(("--auth-max-failures", str(MAX_FAILURES), "--auth-lockout-s", "2"))
    address = "127.0.0.13"
    lock_out(s, address)
    locked_at = time.monotonic()
    deadline = locked_at + 30
    while (r := attempt(s, address, PASSWORD)).status_code == 429:
        assert time.monotonic() < deadline, "still locked out 30 s after a 2 s lockout"
        assert int(r.headers["retry-after"]) <= 2
        time.sleep(0.2)
    assert r.status_code == 200
    assert time.monotonic() - locked_at >= 1.0  # it was locked out for a while (the right password included)
    value, _ = session_cookie(r)  # a fresh session
    assert attempt(s, address, "wrong", cookie=value).status_code == 200


def test_a_session_of_a_user_who_no_longer_exists_is_refused():
    auth = Authenticator([Secret("alice", plain="a-pass"), Secret("bob", plain="b-pass")], max_checks=1)
    header = b"Basic " + base64.b64encode(b"alice:a-pass")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # no event loop of this thread's

        def check(*args):
            return pool.submit(asyncio.run, auth.check(*args)).result()

        session = check(header, "10.0.0.1").session
        assert session and check(None, "10.0.0.1", [session]).status == 200
        auth.set_credentials([Secret("bob", plain="b-pass")])  # alice removed
        assert check(None, "10.0.0.1", [session]).status == 401
        assert check(header, "10.0.0.1").status == 401  # her remembered login is forgotten as well
    auth.close()
