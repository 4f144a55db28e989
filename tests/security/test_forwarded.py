"""Item 7 (part): X-Forwarded-For names the client only when the TCP peer is a proxy the operator listed in
--trusted-proxies / WENMO_TRUSTED_PROXIES. Otherwise the header is ignored, so a local process cannot rotate
addresses past the lockout, and uvicorn's own FORWARDED_ALLOW_IPS changes nothing.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from server_harness import PASSWORD, REPO_ROOT, USER, WenmoServer, clean_env, free_port

SESSION_COOKIE = "wenmo_session"
LOCK_ARGS = ["--auth-max-failures", "3", "--auth-lockout-s", "60"]


@pytest.fixture(scope="module")
def untrusting(server, tmp_path_factory):
    """No --trusted-proxies; the environment even sets uvicorn's FORWARDED_ALLOW_IPS=*, which must not count."""
    s = WenmoServer(tmp_path_factory.mktemp("untrusting") / "state", LOCK_ARGS,
                    env={"FORWARDED_ALLOW_IPS": "*"}, template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


@pytest.fixture(scope="module")
def behind_proxy(server, tmp_path_factory):
    """The test process plays the reverse proxy on 127.0.0.1."""
    s = WenmoServer(tmp_path_factory.mktemp("proxied") / "state", [*LOCK_ARGS, "--trusted-proxies", "127.0.0.1"],
                    template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


def login(server: WenmoServer, password: str, forwarded_for: str | None = None, **headers: str) -> httpx.Response:
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.get(server.url + "/metrics", auth=(USER, password), headers=headers, timeout=30)


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_lockout(untrusting):
    codes = [login(untrusting, f"guess-{i}", forwarded_for=f"198.51.100.{i + 1}").status_code for i in range(3)]
    assert codes == [401, 401, 429], codes  # every guess counted against the real peer, 127.0.0.1
    for i in range(10, 13):  # a new address in the header each time changes nothing
        assert login(untrusting, "guess", forwarded_for=f"198.51.100.{i}").status_code == 429
        assert login(untrusting, PASSWORD, forwarded_for=f"198.51.100.{i}").status_code == 429
    assert "event=forwarded_allow_ips_ignored" in untrusting.logs()
    assert "event=trusted_proxies proxies=none" in untrusting.logs()


def test_a_trusted_proxy_names_the_client_and_lockouts_stay_per_client(behind_proxy):
    codes = [login(behind_proxy, f"guess-{i}", forwarded_for="203.0.113.1").status_code for i in range(3)]
    assert codes == [401, 401, 429], codes
    assert login(behind_proxy, PASSWORD, forwarded_for="203.0.113.1").status_code == 429
    # The proxy appends the address it saw; what the client wrote before it is not believed.
    assert login(behind_proxy, PASSWORD, forwarded_for="203.0.113.9, 203.0.113.1").status_code == 429
    # Another client behind the same proxy is not affected, nor is the proxy's own address.
    assert login(behind_proxy, "one-wrong", forwarded_for="203.0.113.2").status_code == 401
    assert login(behind_proxy, PASSWORD, forwarded_for="203.0.113.2").status_code == 200
    assert login(behind_proxy, PASSWORD).status_code == 200


def test_the_session_cookie_is_secure_when_the_trusted_proxy_says_https(behind_proxy):
    def cookie_line(r: httpx.Response) -> str:
        assert r.status_code == 200
        return next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE))

    https = cookie_line(login(behind_proxy, PASSWORD, forwarded_for="203.0.113.3", **{"X-Forwarded-Proto": "https"}))
    plain = cookie_line(login(behind_proxy, PASSWORD, forwarded_for="203.0.113.3"))
    assert "; Secure" in https and "HttpOnly" in https
    assert "Secure" not in plain


@pytest.mark.parametrize(("value", "named"), [
    ("10.0.0.300", "'10.0.0.300' is not an IP address or network"),
    ("127.0.0.1,proxy.local", "'proxy.local' is not an IP address or network"),
    ("10.0.0.1/8", "'10.0.0.1/8' is not an IP address or network"),
    ("*", "'*' is not accepted"),
])
def test_an_invalid_trusted_proxy_stops_the_start_with_exit_2(tmp_path, value, named):
    env = clean_env({"WENMO_AUTH": f"{USER}:{PASSWORD}"})
    cmd = [sys.executable, "-m", "app", "serve", "--port", str(free_port()), "--state-dir", str(tmp_path),
           "--trusted-proxies", value]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--trusted-proxies / WENMO_TRUSTED_PROXIES" in out.stderr and named in out.stderr
    assert "Traceback" not in out.stderr


def test_x_forwarded_proto_from_an_untrusted_peer_is_ignored(start_server):
    s = start_server()  # no --trusted-proxies
    r = httpx.get(s.url + "/metrics", auth=(USER, PASSWORD), headers={"X-Forwarded-Proto": "https"}, timeout=30)
    assert r.status_code == 200
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE))
    assert "Secure" not in cookie  # the header was not believed: the scheme is the peer's, http


@pytest.fixture(scope="module")
def proxy_chain(server, tmp_path_factory):
    """Two proxies: an outer one on the internet side (192.0.2.7, inside a trusted CIDR network), and the
    test process as the inner one on 127.0.0.1."""
    s = WenmoServer(tmp_path_factory.mktemp("chain") / "state",
                    [*LOCK_ARGS, "--trusted-proxies", "127.0.0.1, 192.0.2.0/24"], template=server.state_dir)
    try:
        yield s.wait_ready()
    finally:
        s.close()


def test_a_chain_of_trusted_proxies_and_cidr_entries_name_the_first_untrusted_address(proxy_chain):
    # client 203.0.113.50 → outer proxy 192.0.2.7 (trusted by the /24) → inner proxy 127.0.0.1 → Wenmo
    chain = "203.0.113.50, 192.0.2.7"
    codes = [login(proxy_chain, f"guess-{i}", forwarded_for=chain).status_code for i in range(3)]
    assert codes == [401, 401, 429], codes
    # The client behind the chain is locked out — not the outer proxy, whose other clients still log in.
    assert login(proxy_chain, PASSWORD, forwarded_for=chain).status_code == 429
    assert login(proxy_chain, PASSWORD, forwarded_for="203.0.113.51, 192.0.2.7").status_code == 200
    assert login(proxy_chain, PASSWORD, forwarded_for="192.0.2.7").status_code == 200
