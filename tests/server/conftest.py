"""Fixtures for tests against a real `python -m app serve --demo` process (see server_harness.py)."""

from __future__ import annotations

import pytest
from server_harness import PASSWORD, USER, WenmoServer, basic_header, shared_server


@pytest.fixture(scope="session")
def server(request, tmp_path_factory) -> WenmoServer:
    return shared_server(request.config, tmp_path_factory.mktemp("wenmo"))


@pytest.fixture()
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def gradio(server):
    """gradio_client with basic auth: headers= puts the Authorization header on every request it makes
    (auth= would try Gradio's login form, which this server does not use)."""
    from gradio_client import Client

    return Client(server.url + "/", headers=basic_header(USER, PASSWORD), verbose=False, analytics_enabled=False)
