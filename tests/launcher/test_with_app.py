"""The launcher supervising the real app (``python -m app serve --demo``): a memory restart drains.

What this test assumes of the app (launcher/README.md, "Contract with the app"):

- ``python -m app serve`` accepts ``--port N``, ``--demo`` (tiny local models, no network) and
  ``--drain-s S``; it reads ``WENMO_AUTH=user:pass`` (basic auth) and ``WENMO_STATE_DIR``.
- ``GET /readyz`` answers 200 once the models are loaded (without auth, or with the WENMO_AUTH
  credentials the launcher sends).
- ``POST /v1/embeddings`` with basic auth and JSON ``{"input": [texts]}`` answers 200 with
  ``{"data": [{"embedding": [...], ...} per text]}`` and accepts at least 64 texts per request.
- On SIGTERM it finishes in-flight requests (up to ``--drain-s``) and exits 0.

Two launcher runs: the first measures how long the app takes to become ready (and checks a clean stop),
the second sets the memory grace period just beyond that, with a 1 MiB RSS threshold, so the restart
is decided while a stream of embedding requests is running.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from launcher_harness import REPO_ROOT, LauncherProcess, clean_env, event_time, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO_ROOT / "app" / "__main__.py").exists(), reason="app not built yet"),
]

AUTH = "user:pass"
STARTUP_TIMEOUT_S = 240
# Connections the client opened in the last moment before SIGTERM may not have been accepted yet.
ACCEPT_MARGIN_S = 0.05
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Call:
    sent: float
    done: float
    status: int | None
    n_texts: int
    n_vectors: int | None
    error: str


def embed(port: int, n_texts: int, timeout_s: float = 120) -> Call:
    texts = [f"今天天气很好，我们去公园散步吧。这是第{i}句话，用来测一测排空。" for i in range(n_texts)]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/embeddings",
        data=json.dumps({"input": texts}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode(),
        },
        method="POST",
    )
    sent = time.time()
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            body = json.loads(response.read())
            return Call(sent, time.time(), response.status, n_texts, len(body["data"]), "")
    except urllib.error.HTTPError as exc:
        return Call(sent, time.time(), exc.code, n_texts, None, exc.read(300).decode(errors="replace"))
    except (OSError, ValueError) as exc:
        return Call(sent, time.time(), None, n_texts, None, f"{type(exc).__name__}: {exc}")


def around(calls: list[Call], t: float) -> list[Call]:
    """The calls near ``t``, for a failure message that stays readable."""
    return [c for c in calls if c.done > t - 3 and c.sent < t + 3]


def launcher_args(port: int, *extra: str) -> list[str]:
    return [
        "--probe", "rss",
        "--poll-s", "0.2",
        "--health-failures", "10",
        "--health-timeout-s", "10",
        "--startup-timeout-s", str(STARTUP_TIMEOUT_S),
        "--drain-s", "20",
        "--backoff-initial-s", "0.2",
        *extra,
        "--port", str(port),
        "--demo",
    ]  # fmt: skip


def test_memory_restart_drains_in_flight_request_and_app_comes_back(tmp_path: Path) -> None:
    env = clean_env({"WENMO_AUTH": AUTH, "WENMO_STATE_DIR": str(tmp_path / "app-state")})

    # Run 1: how long does the app take to be ready here? (Also builds the demo models once.)
    port = free_port()
    (tmp_path / "run1").mkdir()
    with LauncherProcess(launcher_args(port, "--grace-s", "3600"), tmp_path / "run1", env) as run:
        startup_s = float(run.wait_for("ready", STARTUP_TIMEOUT_S)["startup_s"])
        first = embed(port, 8)
        assert first.status == 200 and first.n_vectors == 8, first
        run.proc.terminate()
        assert run.wait_exit(60) == 0, run.describe()
        exit_event = run.named("exit")[0]
        assert exit_event["exit_code"] == 0 and exit_event["killed"] is False, run.describe()

    # Run 2: over a 1 MiB threshold as soon as the grace period ends, i.e. some seconds after ready.
    # Start-up time varies a lot on a busy machine (seen: 9 to 23 s), hence the generous grace, and
    # a restart budget that survives an incarnation killed before it got ready.
    grace_s = max(10.0, 2.0 * startup_s + 5.0)
    port = free_port()
    (tmp_path / "run2").mkdir()
    # The app and the launcher share one state directory here, as deployed (the launcher's defaults to
    # WENMO_STATE_DIR): the app's status tab reads the launcher's files. The demo models come along.
    shared_state = tmp_path / "run2" / "state"
    shutil.copytree(tmp_path / "app-state" / "demo-models", shared_state / "demo-models")
    env = {**env, "WENMO_STATE_DIR": str(shared_state)}
    args = launcher_args(
        port,
        "--threshold-mib",
        "1",
        "--consecutive",
        "1",
        "--grace-s",
        f"{grace_s:.1f}",
        "--max-restarts",
        "50",
    )
    with LauncherProcess(args, tmp_path / "run2", env) as run:
        try:
            run.wait_for("ready", grace_s, match=lambda e: e["attempt"] == 1)
        except AssertionError:
            pytest.fail(
                f"the app needed {startup_s:.1f} s to start in run 1, but more than {grace_s:.1f} s now"
            )

        # Requests of about a second each, so that one is surely in flight at the restart. The first
        # request after start-up is slow (warm-up): time the later ones.
        timings = [embed(port, 64) for _ in range(4)]
        for call in timings:
            assert call.status == 200 and call.n_vectors == 64, call
        warm_s = sorted(c.done - c.sent for c in timings[1:])[1]
        n_texts = max(64, min(5000, int(64 * 1.0 / max(warm_s, 1e-3))))

        calls: list[Call] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                calls.append(embed(port, n_texts))
                if calls[-1].status != 200:
                    time.sleep(0.25)  # the app is draining or restarting: do not spin

        threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            restart = run.wait_for("restart", grace_s + 60)
            run.wait_for("exit", 60)  # drained; later requests only slow the next start-up down
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=130)
        # Ready again: normally attempt 2; a later one if a slow start-up outlived the grace period.
        run.wait_for("ready", STARTUP_TIMEOUT_S, match=lambda e: e["attempt"] >= 2)

        assert restart["reason"] == "memory" and restart["source"] == "rss"
        assert restart["used_mib"] > restart["threshold_mib"] == 1.0
        decided = event_time(restart)
        in_flight = [c for c in calls if c.sent < decided - ACCEPT_MARGIN_S and c.done > decided]
        assert in_flight, (
            f"no request in flight at the restart ({n_texts} texts each): {around(calls, decided)}"
        )
        # Each was answered in full by the old app before it exited: it was sent to the old app, and a POST is
        # not retried, so no other process could have answered it. (Comparing this process's clock with the
        # exit event's only adds scheduling noise.)
        for call in in_flight:
            assert call.status == 200 and call.n_vectors == n_texts, (
                f"in-flight request broken by restart: {call}"
            )
        drained = run.named("exit")[0]
        assert drained["exit_code"] == 0 and drained["killed"] is False, run.describe()

        after = embed(port, 8)
        assert after.status == 200 and after.n_vectors == 8, after

        # The status tab of the new app draws the launcher's samples, its threshold and the restart.
        memory_caption = status_outputs(port)[4]
        assert "sampled by the launcher (rss)" in memory_caption, memory_caption
        assert "restart threshold **1 MiB**" in memory_caption, memory_caption
        restarts = re.search(r"restarts in the last hour: \*\*(\d+)\*\*", memory_caption)
        assert restarts and int(restarts.group(1)) >= 1, memory_caption


def status_outputs(port: int) -> list:
    """The status tab's outputs, through the Gradio API as a browser's refresh gets them."""
    from gradio_client import Client

    header = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
    client = Client(f"http://127.0.0.1:{port}/", headers=header, verbose=False, analytics_enabled=False)
    return list(client.predict(api_name="/status"))
