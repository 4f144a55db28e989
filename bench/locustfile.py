"""Wenmo under Locust: the operator's staged load (baseline, ramp, soak, mixed) as a LoadTestShape.

    WENMO_AUTH=user:password locust -f bench/locustfile.py --host http://127.0.0.1:7860             # web UI, :8089
    WENMO_AUTH=user:password locust -f bench/locustfile.py --host http://127.0.0.1:7860 --headless  # terminal only
    WENMO_AUTH=… locust -f bench/locustfile.py --host http://127.0.0.1:7860 --master                # distributed:
    WENMO_AUTH=… locust -f bench/locustfile.py --worker --master-host HOST                          # one per core

The stages and mixes come from WENMO_LOCUST_* variables (bench/locustrun.py lists them), credentials from
WENMO_AUTH (user:password) only. A host that is not a loopback address is refused unless
WENMO_LOCUST_ALLOW_REMOTE=1. Users are closed loops (send, wait for the answer, send), of the kinds `loadtest`
knows (vectors, similarity, rerank, nlu, ui, metrics, badlogin) with its request bodies and its judgement of
answers; a busy answer (429/503) is a failure named `<stage> <kind> busy` and the user waits for Retry-After
(capped at 5 s); other failures are named `<stage> <kind> error`; successes `<stage> <kind>`.

With WENMO_LOCUST_OUT=DIR the master (or the single process) writes the stage timeline to DIR/stages.json, and
every process the engine time of each answer that carried X-Wenmo-Engine-Ms to DIR/records-<pid>.jsonl (and its
distinct error answers at the end): `python -m app loadtest` runs this file headless and computes the ramp's
steps, the safe concurrency and the server overhead from locust's statistics and these records.

With workers, the master tells them each stage through a custom message; a request cap (WENMO_LOCUST_*_REQUESTS)
is then checked on the master's statistics, which workers report every 3 s, so a stage can overshoot its cap by
that much load; in a single process the cap is exact.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` and `app` under a plain `locust -f`

import gevent  # noqa: E402  (locust has patched the process for gevent before it imports this file)
import requests  # noqa: E402
from locust import LoadTestShape, User, constant, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from app.errors import InputError  # noqa: E402
from bench.loadtest import ENGINE_HEADER, Requests, _retry_after, benchmark_address, check_url, judge  # noqa: E402
from bench.locustrun import (  # noqa: E402
    PREFIX,
    SPAWN_RATE,
    busy_message,
    plan_from_env,
    request_name,
    write_timeline,
)

log = logging.getLogger("wenmo.locust")
STAGE_MESSAGE = "wenmo_stage"
RETRY_AFTER_CAP_S = 5.0
AUTH_HINT = "set WENMO_AUTH=user:password to the server's credentials"


def _fail(message: str) -> None:
    sys.stderr.write(f"bench/locustfile.py: {message}\n")
    raise SystemExit(2)


def _auth(text: str) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep:
        raise InputError("WENMO_AUTH must be user:password")
    return user, password


def _setting(key: str, default: float) -> float:
    text = os.environ.get(PREFIX + key, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        raise InputError(f"{PREFIX}{key}={text!r}: give a number") from None
    if value <= 0:
        raise InputError(f"{PREFIX}{key}={text!r}: must be > 0")
    return value


try:
    PLAN = plan_from_env(os.environ)
    AUTH = _auth(os.environ.get("WENMO_AUTH", ""))
    REQUEST_TIMEOUT_S = _setting("REQUEST_TIMEOUT_S", 60.0)
    READY_TIMEOUT_S = _setting("READY_TIMEOUT_S", 30.0)
    SEED = int(os.environ.get(PREFIX + "SEED", "0") or 0)
except (InputError, ValueError) as e:
    _fail(str(e) if isinstance(e, InputError) else f"{PREFIX}SEED: give a whole number")
ALLOW_REMOTE = os.environ.get(PREFIX + "ALLOW_REMOTE", "") == "1"
OUT = Path(os.environ[PREFIX + "OUT"]) if os.environ.get(PREFIX + "OUT") else None
REQUESTS = Requests(SEED, os.environ.get(PREFIX + "MODEL", ""), 8)


def check_host(host: str | None) -> str:
    return check_url(host or "", ALLOW_REMOTE, "--host", f"{PREFIX}ALLOW_REMOTE=1")


# ---- this process's view of the stage ------------------------------------------------------------------------------
class Current:
    """The stage this process's users are in (set by the shape here, or by the master's message on a worker) and
    how many requests they have started in it."""

    index = -1
    issued = 0
    kinds: list[str] = []
    weights: list[float] = []

    @classmethod
    def enter(cls, index: int) -> None:
        if index == cls.index:
            return
        cls.index, cls.issued = index, 0
        if 0 <= index < len(PLAN):
            cls.kinds = [k for k, _ in PLAN[index].mix]
            cls.weights = [w for _, w in PLAN[index].mix]

    @classmethod
    def stage(cls):  # noqa: ANN206
        return PLAN[cls.index] if 0 <= cls.index < len(PLAN) else None


class Records:
    """DIR/records-<pid>.jsonl: engine times as they come, distinct error answers (at most 20) at the end."""

    file = None
    samples: dict[str, int] = {}

    @classmethod
    def write(cls, row: dict[str, Any]) -> None:
        if OUT is None:
            return
        if cls.file is None:
            OUT.mkdir(parents=True, exist_ok=True)
            cls.file = (OUT / f"records-{os.getpid()}.jsonl").open("a", encoding="utf-8", buffering=1)
        cls.file.write(json.dumps(row, ensure_ascii=False) + "\n")

    @classmethod
    def sample(cls, text: str) -> None:
        if text in cls.samples or len(cls.samples) < 20:
            cls.samples[text] = cls.samples.get(text, 0) + 1

    @classmethod
    def close(cls) -> None:
        for text, n in cls.samples.items():
            for _ in range(n):
                cls.write({"type": "sample", "text": text})
        cls.samples = {}
        if cls.file is not None:
            cls.file.close()
            cls.file = None


# ---- the users ----------------------------------------------------------------------------------------------------
class WenmoUser(User):
    """One closed-loop client of the stage's mix."""

    wait_time = constant(0)
    numbers = itertools.count()

    def on_start(self) -> None:
        try:
            self.base = check_host(self.host)
        except InputError as e:
            log.error("%s", e)
            raise StopUser() from None
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment for the server under test
        self.session.auth = AUTH
        self.bare = requests.Session()  # wrong logins: no credentials, no session cookie
        self.bare.trust_env = False
        self.rng = random.Random((SEED + 1) * 1_000_003 + os.getpid() * 7919 + next(self.numbers))

    def on_stop(self) -> None:
        if hasattr(self, "session"):
            self.session.close()
            self.bare.close()

    @task
    def one_request(self) -> None:
        stage = Current.stage()
        if stage is None or (stage.cap and Current.issued >= stage.cap):
            gevent.sleep(0.05)  # between stages, or this stage's cap is reached: wait for the next one
            return
        Current.issued += 1
        kind = self.rng.choices(Current.kinds, Current.weights)[0]
        wait = self.send(stage.label, kind)
        if wait > 0:
            gevent.sleep(wait)

    def call(self, kind: str, path: str, body: dict[str, Any]) -> requests.Response:
        url = self.base + path
        if kind == "metrics":
            return self.session.get(url, timeout=REQUEST_TIMEOUT_S)
        if kind == "badlogin":
            self.bare.cookies.clear()
            return self.bare.post(url, json=body, auth=("wenmo-soak", "wrong-password"), timeout=REQUEST_TIMEOUT_S,
                                  headers={"X-Forwarded-For": benchmark_address(self.rng)})
        r = self.session.post(url, json=body, timeout=REQUEST_TIMEOUT_S)
        if kind != "ui" or r.status_code != 200:
            return r
        try:  # the UI's path takes two calls: join the queue, read the event's stream
            event = r.json()["event_id"]
        except (ValueError, KeyError, TypeError):
            return r
        return self.session.get(f"{url}/{event}", timeout=REQUEST_TIMEOUT_S)

    def send(self, label: str, kind: str) -> float:
        """One request, reported to locust; the seconds to wait before the next (Retry-After of a busy answer)."""
        path, body = REQUESTS.build(kind, self.rng)
        started, t0 = time.time(), time.perf_counter()
        r = None
        try:
            r = self.call(kind, path, body)
            category, detail = judge(kind, r.status_code, r.text, body)
        except requests.Timeout:
            category, detail = "error", "timeout"
        except requests.RequestException as e:
            category, detail = "error", type(e).__name__
        ms = (time.perf_counter() - t0) * 1000
        failure, wait = None, 0.0
        if category == "busy":
            failure = busy_message(r.status_code, r.headers.get("Retry-After"))
            wait = min(_retry_after(r.headers.get("Retry-After")) or 0.0, RETRY_AFTER_CAP_S)
        elif category == "error":
            failure = detail
            if r is not None and kind != "badlogin" and not 200 <= r.status_code < 300:
                if r.status_code in (401, 403):
                    failure = f"{detail}: {AUTH_HINT}"
                Records.sample(f"{kind} {path}: HTTP {r.status_code} {r.text[:200]!r}")
        elif r is not None and r.headers.get(ENGINE_HEADER) is not None:
            try:
                Records.write({"type": "engine", "stage": label, "kind": kind, "http_ms": ms,
                               "engine_ms": float(r.headers[ENGINE_HEADER])})
            except ValueError:
                pass
        self.environment.events.request.fire(
            request_type="GET" if kind == "metrics" else "POST", name=request_name(label, kind, category),
            response_time=ms, response_length=len(r.content) if r is not None else 0, exception=failure,
            context={}, response=r, start_time=started, url=self.base + path)
        return wait


# ---- the stages ---------------------------------------------------------------------------------------------------
class WenmoStages(LoadTestShape):
    """PLAN's stages one after the other: each for its seconds, or until its requests reach its cap."""

    def __init__(self) -> None:
        super().__init__()
        self.restart()

    def reset_time(self) -> None:  # called at every start (the web UI can start the same shape again)
        super().reset_time()
        self.restart()

    def restart(self) -> None:
        self.index, self.began, self.timeline = -1, 0.0, []

    def answered(self, label: str) -> int:
        return sum(e.num_requests for e in self.runner.stats.entries.values() if e.name.startswith(label + " "))

    def advance(self, now: float, why: str) -> None:
        if self.timeline:
            self.timeline[-1].update(end=time.time(), ended=why)
        self.index += 1
        self.began = now
        if self.index < len(PLAN):
            st = PLAN[self.index]
            self.timeline.append({"label": st.label, "name": st.name, "users": st.users, "start": time.time()})
        if OUT is not None:
            OUT.mkdir(parents=True, exist_ok=True)
            write_timeline(OUT, self.timeline)

    def tick(self) -> tuple[int, float] | None:
        now = self.get_run_time()
        if self.index < 0:
            self.advance(now, "")
        elif self.index < len(PLAN):
            st = PLAN[self.index]
            if now - self.began >= st.seconds:
                self.advance(now, "time")
            elif st.cap and self.answered(st.label) >= st.cap:
                self.advance(now, "cap")
        if self.index >= len(PLAN):
            return None
        # Every tick, so that a worker that joins late learns the stage too; before the users change, so that
        # the new users' first requests carry the new stage's name.
        self.runner.send_message(STAGE_MESSAGE, {"index": self.index})
        return PLAN[self.index].users, SPAWN_RATE


def _on_stage(environment: Any, msg: Any, **_kw: Any) -> None:  # noqa: ANN401
    Current.enter(int(msg.data["index"]))


def wait_ready(base: str) -> None:
    """GET /readyz until 200; a clear error on 401/403 or when READY_TIMEOUT_S passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    with requests.Session() as s:
        s.trust_env, s.auth = False, AUTH
        while True:
            try:
                r = s.get(base + "/readyz", timeout=5)
                if r.status_code == 200:
                    return
                if r.status_code in (401, 403):
                    _fail(f"{base}/readyz answered HTTP {r.status_code}: {AUTH_HINT}")
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
            if time.monotonic() >= deadline:
                _fail(f"{base} was not ready within {READY_TIMEOUT_S:g} s (last: {last}); start it with "
                      f"`python -m app serve` or raise {PREFIX}READY_TIMEOUT_S")
            gevent.sleep(0.5)


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:  # noqa: ANN401
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        runner.register_message(STAGE_MESSAGE, _on_stage)
    if isinstance(runner, WorkerRunner) or not environment.host:
        return  # workers get the host from the master; without --host the web UI asks for it (checked per user)
    try:
        base = check_host(environment.host)
    except InputError as e:
        _fail(str(e))
    wait_ready(base)


@events.quitting.add_listener
def _on_quitting(**_kw: Any) -> None:  # noqa: ANN401
    Records.close()
