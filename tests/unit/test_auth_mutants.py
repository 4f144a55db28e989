"""Auth's decision at its edges: hash format and parsing, the Basic header, the failure limiter's window,
lockout and memory bounds, the remembered-login cache, the bounded check pool and the decoy hash that makes
an unknown user cost as much as a known one. Each test kills mutants that tests/mutation.sh found surviving;
every call happens inside a test (mutmut only sees calls made while a test runs, not at import)."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import logging
import threading
import time
import types

import pytest
from test_auth_verify import basic, run

import app.web.auth as auth_module
from app.errors import ConfigError
from app.web.auth import (
    LOCKED,
    Authenticator,
    FailureLimiter,
    Secret,
    Verdict,
    hash_password,
    parse_basic,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def poll(condition) -> None:
    deadline = time.monotonic() + 30
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert condition()


# ---- secrets -----------------------------------------------------------------------------------------


def test_a_hash_has_a_fresh_128_bit_salt_and_verifies():
    one, two = hash_password("pw", iterations=3), hash_password("pw", iterations=3)
    scheme, iterations, salt, digest = one.split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", "3")
    assert len(salt) == 22 and salt != two.split("$")[2]  # token_urlsafe(16): 16 random bytes
    assert len(base64.b64decode(digest)) == 32
    secret = Secret.parse("u", one, "test")
    assert secret.matches("pw") and not secret.matches("pW")


def test_a_salt_with_a_dollar_is_refused():
    with pytest.raises(ValueError, match=r"^salt must not contain '\$'$"):
        hash_password("pw", iterations=1, salt="a$b")


def test_a_parsed_hash_keeps_user_iterations_salt_and_digest():
    stored = hash_password("pässwort", iterations=1, salt="NaCl")
    digest = hashlib.pbkdf2_hmac("sha256", "pässwort".encode(), b"NaCl", 1)
    assert stored == "pbkdf2_sha256$1$NaCl$" + base64.b64encode(digest).decode()
    secret = Secret.parse("bob", stored, "auth.txt")
    assert (secret.user, secret.plain, secret.iterations, secret.salt) == ("bob", None, 1, "NaCl")
    assert secret.digest == digest
    assert secret.matches("pässwort")


HASH_ERROR = ("auth.txt: the hash for user 'bob' is not pbkdf2_sha256$<iterations>$<salt>$<base64>; "
              "make one with `python -m app hash-password --user NAME`")


@pytest.mark.parametrize("secret", [
    "pbkdf2_sha256$0$salt$AAAA",  # no iterations
    "pbkdf2_sha256$10$$AAAA",  # no salt
    "pbkdf2_sha256$10$salt$",  # no digest
    "pbkdf2_sha256$10$salt$AA!AA",  # not base64 (without the "!" it would be)
    "pbkdf2_sha256$10$salt",  # a part missing
])
def test_a_malformed_hash_is_refused_with_the_fix(secret):
    with pytest.raises(ConfigError) as caught:
        Secret.parse("bob", secret, "auth.txt")
    assert str(caught.value) == HASH_ERROR


def test_an_empty_password_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as caught:
        Secret.parse("bob", "", "auth.txt")
    assert str(caught.value) == "auth.txt: the password for user 'bob' is empty; give one after the ':'"


# ---- the Basic header --------------------------------------------------------------------------------


def test_basic_header_tolerates_spaces_around_the_token_and_refuses_non_base64():
    token = base64.b64encode(b"user:pa ss")
    assert parse_basic(b"Basic " + token + b" ") == ("user", "pa ss")
    assert parse_basic(b"Basic  " + token) == ("user", "pa ss")
    # a character outside base64 makes the header malformed, not silently skipped
    assert parse_basic(b"Basic " + token[:4] + b"!" + token[4:]) is None


# ---- the failure limiter -----------------------------------------------------------------------------


def test_a_failure_exactly_window_s_old_still_counts():
    clock = Clock(0.0)
    lim = FailureLimiter(max_failures=2, window_s=300.0, lockout_s=60.0, clock=clock)
    lim.record_failure("a")
    clock.now = 300.0
    lim.record_failure("a")
    assert lim.retry_after_s("a") == 60


def test_a_lockout_ends_exactly_at_its_end_and_counts_once_each():
    clock = Clock(0.0)
    lim = FailureLimiter(max_failures=1, lockout_s=10.0, clock=clock)
    assert lim.lockouts == 0
    lim.record_failure("a")
    assert (lim.retry_after_s("a"), lim.lockouts, lim.remembered()) == (10, 1, 1)  # failures folded into the lockout
    clock.now = 5.0
    lim.record_failure("a")  # a check that was running when the lockout began: not extended, not counted
    assert (lim.retry_after_s("a"), lim.lockouts) == (5, 1)
    clock.now = 10.0
    assert lim.retry_after_s("a") == 0
    lim.record_failure("b")
    assert lim.lockouts == 2


def test_expired_lockouts_are_forgotten_and_live_ones_kept():
    clock = Clock(0.0)
    lim = FailureLimiter(max_failures=1, lockout_s=10.0, clock=clock)
    lim.record_failure("a")
    clock.now = 10.0  # a's lockout ends now
    lim.record_failure("b")
    assert lim.remembered() == 1
    assert lim.retry_after_s("b") == 10


def test_too_many_lockouts_forget_the_oldest():
    clock = Clock(0.0)
    lim = FailureLimiter(max_failures=1, lockout_s=100.0, max_addresses=2, clock=clock)
    for t, address in enumerate("abc"):
        clock.now = float(t)
        lim.record_failure(address)
    assert [lim.retry_after_s(x) for x in "abc"] == [0, 99, 100]
    assert lim.remembered() == 2


def test_too_many_failing_addresses_forget_the_oldest():
    clock = Clock(0.0)
    lim = FailureLimiter(max_failures=2, lockout_s=100.0, max_addresses=2, clock=clock)
    for address in "abc":
        lim.record_failure(address)
    assert lim.remembered() == 2
    for address in "bca":
        lim.record_failure(address)  # the second failure of each
    assert [lim.retry_after_s(x) for x in "abc"] == [0, 100, 100]  # a's first failure was forgotten


def test_a_lockout_is_logged_with_address_failures_and_seconds(caplog):
    lim = FailureLimiter(max_failures=2, lockout_s=900.0, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="app.web.auth"):
        lim.record_failure("10.0.0.7")
        lim.record_failure("10.0.0.7")
    assert [r.getMessage() for r in caplog.records] == ["event=auth_lockout address=10.0.0.7 failures=2 seconds=900"]


# ---- the authenticator -------------------------------------------------------------------------------


@pytest.fixture
def users():
    return [Secret("alice", plain="right"), Secret.parse("bob", hash_password("bobs", iterations=10), "test"),
            Secret.parse("carol", hash_password("carols", iterations=20), "test")]


def counting_verify(auth: Authenticator) -> list[str]:
    calls: list[str] = []
    verify = auth._verify

    def counted(user, password):
        calls.append(user)
        return verify(user, password)

    auth._verify = counted
    return calls


def test_a_verified_header_is_remembered_and_the_oldest_forgotten_first(users, monkeypatch):
    monkeypatch.setattr(auth_module, "VERIFIED_CACHE", 3)
    auth = Authenticator(users, FailureLimiter(clock=Clock()))
    calls = counting_verify(auth)
    # four spellings of alice's login (the token may be followed by spaces): four cache entries
    headers = [basic("alice", "right") + b" " * k for k in range(4)]
    for h in headers[:3]:
        assert run(auth.check(h, "10.0.0.1")).user == "alice"
    assert len(calls) == 3
    assert run(auth.check(headers[0], "10.0.0.1")).user == "alice"  # remembered: no second hash
    assert len(calls) == 3
    assert run(auth.check(headers[3], "10.0.0.1")).user == "alice"  # the fourth: headers[1] goes
    assert len(calls) == 4
    for h in (headers[0], headers[2], headers[3]):
        assert run(auth.check(h, "10.0.0.1")).user == "alice"
    assert len(calls) == 4
    assert run(auth.check(headers[1], "10.0.0.1")).user == "alice"
    assert len(calls) == 5
    auth.close()


def test_a_wrong_password_is_never_remembered_as_a_login(users):
    auth = Authenticator(users, FailureLimiter(clock=Clock()))
    assert run(auth.check(basic("alice", "right"), "10.0.0.1")).status == 200
    assert run(auth.check(basic("alice", "wrong"), "10.0.0.1")) == Verdict(401)
    auth.close()


def test_only_the_first_four_session_cookies_are_read(users):
    auth = Authenticator(users, FailureLimiter(clock=Clock()))
    good = auth.sessions.issue("alice")
    assert run(auth.check(None, "10.0.0.1", ["stale"] * 3 + [good])) == Verdict(200, "alice")
    assert run(auth.check(None, "10.0.0.1", ["stale"] * 4 + [good])) == Verdict(401)
    auth.close()


def test_a_session_of_a_removed_user_ends(users):
    auth = Authenticator(users, FailureLimiter(clock=Clock()))
    cookie = auth.sessions.issue("alice")
    auth.set_credentials(users[1:])
    assert run(auth.check(None, "10.0.0.1", [cookie])) == Verdict(401)
    auth.close()


def test_the_failure_that_locks_answers_with_the_lockout(users):
    auth = Authenticator(users, FailureLimiter(max_failures=2, lockout_s=60, clock=Clock()))
    assert run(auth.check(basic("alice", "no"), "10.0.0.1")) == Verdict(401)
    assert run(auth.check(basic("alice", "no"), "10.0.0.1")) == Verdict(429, retry_after_s=60, why=LOCKED)
    assert auth.failures == 2
    auth.close()


def test_a_right_password_checked_while_its_address_got_locked_is_refused(users):
    limiter = FailureLimiter(max_failures=1, lockout_s=60, clock=Clock())
    auth = Authenticator(users, limiter)
    gate = threading.Event()
    verify = auth._verify

    def slow(user, password):
        gate.wait(30)
        return verify(user, password)

    auth._verify = slow
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(run, auth.check(basic("alice", "right"), "10.0.0.1"))
        poll(lambda: auth._checking == 1)
        limiter.record_failure("10.0.0.1")  # another request's wrong password locks the address meanwhile
        gate.set()
        assert pending.result(30) == Verdict(429, retry_after_s=60, why=LOCKED)
    auth.close()


def test_the_check_pool_admits_max_checks_and_frees_each_slot(users):
    auth = Authenticator(users, FailureLimiter(clock=Clock()), max_checks=2)
    gate = threading.Event()
    auth._verify = lambda user, password: gate.wait(30) and None
    first = [auth._start_check("alice", "x"), auth._start_check("alice", "x")]
    assert all(job is not None for job in first)
    assert auth._start_check("alice", "x") is None  # both slots taken
    assert run(auth.check(basic("alice", "x"), "10.0.0.1")) == Verdict(429, retry_after_s=1, why="busy")
    assert run(auth.check(basic("alice", "y"), "10.0.0.1")).status == 429
    assert auth.busy == 2
    gate.set()
    concurrent.futures.wait(first, 30)
    poll(lambda: auth._checking == 0)
    again = [auth._start_check("alice", "x"), auth._start_check("alice", "x")]
    assert all(job is not None for job in again)
    assert auth._start_check("alice", "x") is None
    concurrent.futures.wait(again, 30)
    auth.close()


def pbkdf2_iterations(monkeypatch) -> list[int]:
    """Iterations of every PBKDF2 run from now on: the cost of a check, without timing anything."""
    runs: list[int] = []

    def pbkdf2_hmac(name, password, salt, iterations):
        runs.append(iterations)
        return hashlib.pbkdf2_hmac(name, password, salt, iterations)

    monkeypatch.setattr(auth_module, "hashlib", types.SimpleNamespace(pbkdf2_hmac=pbkdf2_hmac, sha256=hashlib.sha256))
    return runs


def test_an_unknown_user_costs_the_slowest_hash_in_use_and_a_known_one_only_its_own(users, monkeypatch):
    auth = Authenticator(users, FailureLimiter(clock=Clock()))
    runs = pbkdf2_iterations(monkeypatch)
    assert auth._verify("mallory", "x") is None
    assert runs == [20]  # the decoy: carol's 20 iterations, the most of any user
    runs.clear()
    assert auth._verify("bob", "bobs") == "bob"
    assert runs == [10]  # bob's own hash, no decoy
    runs.clear()
    assert auth._verify("alice", "right") == "alice"
    assert runs == []  # a plain password: no hash, no decoy
    auth.close()


def test_with_only_plain_passwords_the_decoy_is_plain_too(monkeypatch):
    auth = Authenticator([Secret("alice", plain="right")], FailureLimiter(clock=Clock()))
    runs = pbkdf2_iterations(monkeypatch)
    assert auth._verify("mallory", "right") is None
    assert runs == []
    auth.close()
