"""Basic auth in front of every route (UI, Gradio's API and files, the HTTP routes), and the credential
formats. The lockout and the generated password are in test_lifecycle.py, on a server of their own."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import subprocess
import sys

import httpx
import pytest
from server_harness import REPO_ROOT, clean_env

from app.errors import ConfigError
from app.web.auth import Authenticator, FailureLimiter, Secret, hash_password, parse_credential_line, read_auth_file

CHALLENGE = 'Basic realm="Wenmo", charset="UTF-8"'
PROTECTED = [
    ("GET", "/"), ("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/gradio_api/file=/etc/hostname"),
    ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/upload"), ("GET", "/openapi.json"),
    ("GET", "/metrics"), ("POST", "/v1/embeddings"), ("POST", "/v1/similarity"), ("POST", "/v1/nlu"),
    ("GET", "/v1/models"), ("POST", "/v1/models/embed"), ("POST", "/v1/models/embed/rollback"),
    ("GET", "/no/such/page"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_asks_for_basic_auth(server, method, path):
    r = httpx.request(method, server.url + path, json={} if method == "POST" else None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == CHALLENGE
    assert r.json()["error"]["type"] == "authentication_error"


def test_browsers_get_a_readable_page_with_the_challenge(server):
    r = httpx.get(server.url + "/", headers={"Accept": "text/html"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == CHALLENGE
    assert "需要登录" in r.text and r.headers["content-type"].startswith("text/html")


def test_right_credentials_open_the_ui_and_the_api(server):
    auth = ("user", "pass")
    page = httpx.get(server.url + "/", auth=auth)
    assert page.status_code == 200 and "<html" in page.text.lower()
    info = httpx.get(server.url + "/gradio_api/info", auth=auth)
    assert info.status_code == 200 and "/embed" in info.json()["named_endpoints"]
    assert httpx.get(server.url + "/metrics", auth=auth).status_code == 200


@pytest.mark.parametrize("auth", [("user", "wrong"), ("someone", "pass"), ("", "")])
def test_wrong_credentials_are_refused(server, auth):
    r = httpx.post(server.url + "/v1/embeddings", json={"input": "x"}, auth=auth)
    assert r.status_code == 401 and r.headers["www-authenticate"] == CHALLENGE


def test_malformed_authorization_headers_are_refused(server):
    for value in ("Basic !!!notbase64", "Bearer abc", "Basic " + "dXNlcg==", "Basic"):  # "user" without ':'
        r = httpx.get(server.url + "/metrics", headers={"Authorization": value})
        assert r.status_code == 401, value


# ---- credential formats (no server needed) ---------------------------------------------------------------
def test_salted_hash_verifies_only_the_right_password():
    line = f"alice:{hash_password('s3cret:with:colons', iterations=1000)}"
    secret = parse_credential_line(line, "test")
    assert secret.user == "alice" and secret.plain is None and secret.iterations == 1000
    assert secret.matches("s3cret:with:colons")
    assert not secret.matches("s3cret")


def test_auth_file_with_comments_plain_and_hashed_lines(tmp_path):
    f = tmp_path / "users"
    f.write_text(f"# team\n\nbob:plainpw\ncarol:{hash_password('pw2', iterations=1000)}\n", encoding="utf-8")
    secrets = read_auth_file(f)
    assert [s.user for s in secrets] == ["bob", "carol"]
    auth = Authenticator(secrets)
    header = b"Basic " + base64.b64encode(b"carol:pw2")
    verdict = run_async(auth.check(header, "10.0.0.1"))
    assert (verdict.status, verdict.user) == (200, "carol") and verdict.session  # a login sets a session cookie
    assert run_async(auth.check(b"Basic " + base64.b64encode(b"bob:nope"), "10.0.0.1")).status == 401


def run_async(coro):
    # In a thread of its own: Playwright's sync API (tests/browser) can leave an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.mark.parametrize(("content", "needle"), [
    ("justauser\n", "user:password"),
    ("dave:\n", "empty"),
    ("erin:pbkdf2_sha256$x$salt$abc\n", "make one with `python -m app hash-password --user NAME`"),
    ("# only comments\n", "no `user:password` lines"),
])
def test_bad_auth_files_fail_with_the_line_named(tmp_path, content, needle):
    f = tmp_path / "users"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        read_auth_file(f)
    assert needle in e.value.message
    assert str(f) in e.value.message


def test_failure_limiter_locks_an_address_out_and_lets_it_back_later():
    now = [0.0]
    lim = FailureLimiter(max_failures=3, window_s=10, lockout_s=30, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after_s("1.2.3.4") == 0
        lim.record_failure("1.2.3.4")
    assert lim.retry_after_s("1.2.3.4") == 30
    assert lim.retry_after_s("5.6.7.8") == 0  # other addresses are not affected
    now[0] = 29.5
    assert lim.retry_after_s("1.2.3.4") == 1
    now[0] = 30.1
    assert lim.retry_after_s("1.2.3.4") == 0


def test_failures_spread_beyond_the_window_do_not_lock_out():
    now = [0.0]
    lim = FailureLimiter(max_failures=3, window_s=10, lockout_s=30, clock=lambda: now[0])
    for t in (0, 6, 12, 18):
        now[0] = t
        lim.record_failure("1.2.3.4")
    assert lim.retry_after_s("1.2.3.4") == 0


def test_hash_command_prints_a_line_the_server_accepts():
    out = subprocess.run([sys.executable, "-m", "app", "hash-password", "--user", "frank", "--iterations", "2000"],
                         input="pässwörd\n", capture_output=True, text=True, cwd=REPO_ROOT, env=clean_env(),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("frank:pbkdf2_sha256$2000$")
    assert "pässwörd" not in line
    secret = parse_credential_line(line, "stdout")
    assert isinstance(secret, Secret) and secret.matches("pässwörd") and not secret.matches("password")
