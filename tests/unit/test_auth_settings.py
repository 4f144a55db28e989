"""The auth settings: the lockout (auth_max_failures, auth_lockout_s) as the middleware applies it, and
where the credentials come from (WENMO_AUTH, WENMO_AUTH_FILE, systemd's CREDENTIALS_DIRECTORY).

The middleware is driven through bare ASGI calls with a fake clock: no server, no web stack."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging

import pytest

from app.config import Settings, in_kubernetes
from app.errors import ConfigError
from app.web.auth import Authenticator, BasicAuthMiddleware, FailureLimiter, Secret, load_credentials

GOOD = ("alice", "right")


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def middleware(settings: Settings, clock: Clock) -> BasicAuthMiddleware:
    """Built the way app/web/server.py builds it, around an app that answers 200."""

    async def ok(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    auth = Authenticator([Secret(GOOD[0], plain=GOOD[1])], FailureLimiter.from_settings(settings, clock=clock))
    return BasicAuthMiddleware(ok, auth)


def request(app: BasicAuthMiddleware, auth: tuple[str, str], address: str = "10.0.0.7") -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "client": (address, 5000),
             "headers": [(b"authorization", basic(*auth))]}
    # In a thread of its own: an earlier test in the same session (Playwright's sync API) can leave an event
    # loop running in this one, where asyncio.run() refuses to start.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def test_defaults_are_ten_failures_and_five_minutes():
    s = Settings.from_env({})
    assert (s.auth_max_failures, s.auth_lockout_s) == (10, 300.0)
    lim = FailureLimiter.from_settings(s)
    assert (lim.max_failures, lim.lockout_s) == (10, 300.0)


def test_default_middleware_locks_out_at_the_tenth_failure():
    app = middleware(Settings.from_env({}), Clock())
    codes = [request(app, ("alice", f"guess{i}"))[0] for i in range(11)]
    assert codes == [401] * 9 + [429] * 2


def test_max_failures_3_locks_out_at_the_third_failure_even_for_the_right_password():
    clock = Clock()
    app = middleware(Settings.from_env({"WENMO_AUTH_MAX_FAILURES": "3"}), clock)
    codes = [request(app, ("alice", f"guess{i}"))[0] for i in range(3)]
    assert codes == [401, 401, 429]  # the failure that reaches the limit is answered 429 itself
    status, headers = request(app, GOOD)  # the 4th attempt: a new login, not checked while locked out
    assert status == 429 and headers["retry-after"] == "300"
    assert request(app, ("alice", "guess"), address="10.0.0.8")[0] == 401  # other addresses unaffected


def test_lockout_s_sets_retry_after_and_when_logins_are_checked_again():
    clock = Clock()
    app = middleware(Settings.from_env({"WENMO_AUTH_MAX_FAILURES": "2", "WENMO_AUTH_LOCKOUT_S": "42"}), clock)
    assert [request(app, ("alice", "x"))[0] for _ in range(2)] == [401, 429]
    status, headers = request(app, GOOD)
    assert status == 429 and headers["retry-after"] == "42"
    clock.now += 41.5
    status, headers = request(app, GOOD)
    assert status == 429 and headers["retry-after"] == "1"
    clock.now += 1.0
    assert request(app, GOOD)[0] == 200


def test_flags_override_the_environment():
    s = Settings.from_env({"WENMO_AUTH_MAX_FAILURES": "3"}).replace(auth_max_failures=5, auth_lockout_s=1.5)
    assert (s.auth_max_failures, s.auth_lockout_s) == (5, 1.5)


@pytest.mark.parametrize(("env", "needle"), [
    ({"WENMO_AUTH_MAX_FAILURES": "0"}, "--auth-max-failures / WENMO_AUTH_MAX_FAILURES must be ≥ 1, got 0"),
    ({"WENMO_AUTH_MAX_FAILURES": "three"}, "not an integer"),
    ({"WENMO_AUTH_LOCKOUT_S": "0"}, "--auth-lockout-s / WENMO_AUTH_LOCKOUT_S must be a number of seconds > 0"),
    ({"WENMO_AUTH_LOCKOUT_S": "-5"}, "must be a number of seconds > 0, got -5.0"),
    ({"WENMO_AUTH_LOCKOUT_S": "nan"}, "must be a number of seconds > 0"),
    ({"WENMO_AUTH_LOCKOUT_S": "inf"}, "must be a number of seconds > 0"),
])
def test_invalid_lockout_settings_fail_with_the_name_and_the_rule(env, needle):
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert needle in e.value.message


def test_fractional_lockout_is_allowed():
    assert Settings.from_env({"WENMO_AUTH_LOCKOUT_S": "0.25"}).auth_lockout_s == 0.25


# ---- systemd credentials ----------------------------------------------------------------------------------
@pytest.fixture()
def cred_dir(tmp_path):
    d = tmp_path / "credentials"
    d.mkdir()
    (d / "wenmo-auth").write_text("carol:from-systemd\n", encoding="utf-8")
    return d


def test_systemd_credential_is_the_auth_file_when_nothing_else_is_given(cred_dir):
    s = Settings.from_env({"CREDENTIALS_DIRECTORY": str(cred_dir)})
    assert s.auth_file == str(cred_dir / "wenmo-auth") and s.auth == ""


@pytest.mark.parametrize("given", [{"WENMO_AUTH": "dave:pw"}, {"WENMO_AUTH_FILE": "/etc/wenmo/users"}])
def test_wenmo_auth_or_auth_file_wins_over_the_systemd_credential(cred_dir, given):
    s = Settings.from_env({"CREDENTIALS_DIRECTORY": str(cred_dir), **given})
    assert s.auth_file == given.get("WENMO_AUTH_FILE", "")


def test_credentials_directory_without_wenmo_auth_is_ignored(tmp_path):
    (tmp_path / "other-credential").write_text("x:y\n")
    assert Settings.from_env({"CREDENTIALS_DIRECTORY": str(tmp_path)}).auth_file == ""
    assert Settings.from_env({"CREDENTIALS_DIRECTORY": ""}).auth_file == ""


def test_the_systemd_credential_logs_in_and_the_log_names_the_source_not_the_secret(
        cred_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred_dir))
    monkeypatch.delenv("WENMO_AUTH", raising=False)
    monkeypatch.delenv("WENMO_AUTH_FILE", raising=False)
    s = Settings.from_env()
    state = tmp_path / "state"
    with caplog.at_level(logging.INFO):
        found, origin = load_credentials(s.auth, s.auth_file, state)
    assert [c.user for c in found] == ["carol"] and found[0].matches("from-systemd")
    assert origin == f"systemd credential {cred_dir / 'wenmo-auth'}"
    assert not state.exists()  # no password was generated
    assert "from-systemd" not in origin + caplog.text


def test_an_ordinary_auth_file_is_described_as_wenmo_auth_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    users = tmp_path / "users"
    users.write_text("erin:pw\n")
    assert load_credentials("", str(users), tmp_path / "state")[1] == f"WENMO_AUTH_FILE={users}"


def test_no_password_is_generated_where_it_may_not_be(tmp_path):
    """Several replicas (a Kubernetes pod): a password generated per replica would differ from pod to pod."""
    state = tmp_path / "state"
    with pytest.raises(ConfigError, match=r"in Kubernetes \(KUBERNETES_SERVICE_HOST is set\) each replica would "
                                          r"generate a password of its own: mount the Secret as a file and set "
                                          r"WENMO_AUTH_FILE to it"):
        load_credentials("", "", state, may_generate=False)
    assert not (state / "auth.txt").exists()
    users = tmp_path / "users"
    users.write_text("erin:pw\n")
    found, _ = load_credentials("", str(users), state, may_generate=False)  # given credentials: no change
    assert [c.user for c in found] == ["erin"]


@pytest.mark.parametrize(("env", "inside"), [({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True),
                                             ({"KUBERNETES_SERVICE_HOST": ""}, False), ({}, False)])
def test_in_kubernetes_is_the_kubelets_variable(env, inside):
    assert in_kubernetes(env) is inside
