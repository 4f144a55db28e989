"""Tests that attack the real server the way a hostile user would (README "Security"). Each item of the threat
model has its own module; every test talks to a real `python -m app serve --demo` process over HTTP.

`start_server(args, env=…)` starts a server of the test's own (settings differ per attack) and stops it at the
end of the test; the demo checkpoints are copied from the session's shared server, so each start takes seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_harness import PASSWORD, USER, WenmoServer, basic_header, shared_server  # noqa: E402,F401


@pytest.fixture(scope="session")
def server(request, tmp_path_factory) -> WenmoServer:
    return shared_server(request.config, tmp_path_factory.mktemp("wenmo"))


@pytest.fixture()
def start_server(server, tmp_path) -> Iterator[Callable[..., WenmoServer]]:
    started: list[WenmoServer] = []

    def start(args: tuple[str, ...] = (), **kwargs) -> WenmoServer:
        s = WenmoServer(tmp_path / f"state-{len(started)}", args, template=server.state_dir, **kwargs)
        started.append(s)
        return s.wait_ready()

    yield start
    for s in started:
        s.close()
