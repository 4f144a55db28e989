"""`loadtest`: the running service under concurrent users, in the four stages operators use.

    baseline  1 user, short single-text embedding requests: latency floor and the server's own overhead
              (HTTP end-to-end p50 − engine time p50, the engine time read from `X-Wenmo-Engine-Ms`)
    ramp      1 → N users in steps, one embedding request of the stated length mix per call; the safe
              concurrency is the largest user count whose step — and every step before it — has p95 within
              the target, no errors and no busy answers
    soak      a fixed number of users for a duration with a mix of every route (`--soak-mix`), GET /metrics every
              few seconds for the memory gauges (under load), and every `settle_every_s` a settled sample: the
              users pause, the requests in flight finish, `settle_s` of quiet, GET /metrics. The verdict is each
              gauge's slope per 1,000 requests over the settled samples after a warm-up, extrapolated to 24 hours
              at the soak's rate under load, against a budget (MEMORY_BUDGET_MIB_PER_DAY). Settled, because
              under load the resident memory swings by the working memory of whatever is in flight (±100 MiB on
              the demo models' NLU), which hides a slope of a few MiB; what a quiet server still holds is
              what it kept.
    mixed     the same users with a stated mix of vectors, similarity (and rerank) and NLU calls

Kinds of request: vectors (POST /v1/embeddings), similarity and rerank (POST /v1/similarity), nlu (POST /v1/nlu),
ui (the UI's own path: POST /gradio_api/call/embed, then its event stream), metrics (GET /metrics) and badlogin
(a wrong password from one of 1,024 client addresses in 198.18.0.0/15, the benchmarking range, sent as
X-Forwarded-For: it
counts as answered when refused with 401; only meaningful against a server that trusts this client as a proxy
(`--trusted-proxies 127.0.0.1`), else every wrong login counts against this client's own address and locks it out).

Each simulated user sends a request, waits for the answer, and sends the next (closed loop, no think
time). A busy answer (HTTP 503 or 429) is counted apart from errors and the user waits for its
Retry-After (capped) before going on. Every loop stops by itself: at its stage's deadline or request cap,
and every request has a timeout. Only loopback URLs unless `--allow-remote`; credentials come from
WENMO_AUTH (user:password) through Settings, never from a flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import socket
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import InputError, ModelUnavailableError
from bench import workload as wl
from bench.prometheus import MIN_FIT_POINTS, memory_gauges, memory_trend, memory_verdict
from bench.stats import percentile

if TYPE_CHECKING:
    from bench.locustrun import LocustRun

SCHEMA = "wenmo-loadtest/1"
BUSY_STATUSES = (429, 503)
ENGINE_HEADER = "X-Wenmo-Engine-Ms"
OVERHEAD_TARGET_MS = 15.0
STAGE_NAMES = ("baseline", "ramp", "soak", "mixed")
KINDS = ("vectors", "similarity", "rerank", "nlu", "ui", "metrics", "badlogin")
DEFAULT_MIX = "vectors=6,similarity=3,nlu=1"
DEFAULT_SOAK_MIX = "vectors=4,similarity=2,rerank=1,nlu=1,ui=1,metrics=1"
MEMORY_BUDGET_MIB_PER_DAY = 100.0  # the soak's target: every memory gauge grows less than this per 24 h
SAFE_RULE = "p95 ≤ target, no errors and no busy answers, in that step and every smaller one"


@dataclass
class LoadOptions:
    url: str = "http://127.0.0.1:7860"
    allow_remote: bool = False
    stages: tuple[str, ...] = ("baseline", "ramp", "soak", "mixed")
    users: int = 8
    ramp_steps: tuple[int, ...] = ()  # (): 1, 2, 4, … up to users, and users itself
    step_s: float = 15.0
    step_requests: int = 500
    baseline_requests: int = 50
    baseline_s: float = 30.0
    soak_users: int = 0  # 0: the safe concurrency (or half of users without a ramp)
    soak_s: float = 60.0
    soak_requests: int = 20000
    soak_mix: str = DEFAULT_SOAK_MIX
    soak_warmup_s: float = 60.0  # not fitted (caches filling, first allocations); at most half the soak
    memory_budget_mib_per_day: float = MEMORY_BUDGET_MIB_PER_DAY
    mixed_s: float = 30.0
    mixed_requests: int = 5000
    mix: str = DEFAULT_MIX
    metrics_interval_s: float = 5.0
    settle_every_s: float = 60.0  # the soak pauses its users this often for a settled sample (0: never)
    settle_s: float = 3.0  # quiet seconds before a settled sample (past the server's trailing heap trim)
    p95_target_ms: float = 1000.0
    request_timeout_s: float = 60.0
    ready_timeout_s: float = 120.0
    retry_after_cap_s: float = 5.0
    candidates: int = 8
    model: str = ""
    seed: int = 0
    command: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    kind: str
    category: str  # ok | busy | error
    status: int | None
    latency_s: float
    at_s: float  # when the request started, seconds since the stage began
    engine_ms: float | None = None
    retry_after_s: float | None = None
    detail: str = ""


# ---- pure pieces ------------------------------------------------------------------------------------------
def window_rate(rows: Sequence[tuple], warmup_s: float, pauses: Sequence[tuple[float, float]]) -> float | None:
    """Requests per second under load between the first and the last sample after the warm-up: the requests
    answered between them over the seconds between them less the pauses within; None without two such samples
    or without requests between them. `rows`: (seconds, gauges, requests answered); `pauses`: (start, end)."""
    fitted = [row for row in rows if row[0] >= warmup_s]
    if len(fitted) < 2:
        return None
    (ta, _, na), (tb, _, nb) = fitted[0][:3], fitted[-1][:3]
    loaded = tb - ta - sum(max(0.0, min(end, tb) - max(start, ta)) for start, end in pauses)
    return (nb - na) / loaded if loaded > 0 and nb > na else None


def check_url(url: str, allow_remote: bool, flag: str = "--url", remote_switch: str = "--allow-remote") -> str:
    """The URL without a trailing slash; an InputError unless it is http(s) on a loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{flag} {url!r}: give an http:// or https:// URL such as http://127.0.0.1:7860")
    if not allow_remote and not is_loopback(parts.hostname):
        raise InputError(
            f"{flag} {url!r}: {parts.hostname} is not a loopback address; a load test against another machine "
            f"needs {remote_switch} (and that machine's owner's consent)"
        )
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host.lower() == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def parse_mix(text: str, flag: str = "--mix") -> dict[str, float]:
    """`vectors=6,similarity=3,nlu=1` → normalised weights; an InputError naming the flag and the valid kinds."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise InputError(f"{flag}: unknown kind {name!r}; use {', '.join(KINDS)}, e.g. {DEFAULT_MIX}")
        try:
            w = float(weight)
        except ValueError:
            raise InputError(f"{flag}: {part.strip()!r} needs a number after '=', e.g. {DEFAULT_MIX}") from None
        if w < 0:
            raise InputError(f"{flag}: weight of {name} must be ≥ 0")
        mix[name] = w
    total = sum(mix.values())
    if total <= 0:
        raise InputError(f"{flag}: give at least one positive weight, e.g. {DEFAULT_MIX}")
    return {k: v / total for k, v in mix.items() if v > 0}


def ramp_users(max_users: int, steps: Sequence[int] = ()) -> list[int]:
    if steps:
        return sorted({int(s) for s in steps if int(s) >= 1})
    out, n = [], 1
    while n < max_users:
        out.append(n)
        n *= 2
    out.append(max_users)
    return out


def classify(status: int | None) -> str:
    if status is None:
        return "error"
    if 200 <= status < 300:
        return "ok"
    if status in BUSY_STATUSES:
        return "busy"
    return "error"


def summarize(outcomes: Sequence[Outcome], users: int, elapsed_s: float) -> dict[str, Any]:
    ok = [o.latency_s * 1000 for o in outcomes if o.category == "ok"]
    reasons: dict[str, int] = {}
    busy_status: dict[str, int] = {}
    for o in outcomes:
        if o.category == "error":
            reasons[o.detail or f"HTTP {o.status}"] = reasons.get(o.detail or f"HTTP {o.status}", 0) + 1
        elif o.category == "busy":
            busy_status[str(o.status)] = busy_status.get(str(o.status), 0) + 1
    return {
        "users": users,
        "requests": len(outcomes),
        "ok": len(ok),
        "busy": sum(1 for o in outcomes if o.category == "busy"),
        "errors": sum(1 for o in outcomes if o.category == "error"),
        "elapsed_s": elapsed_s,
        "throughput_rps": len(ok) / elapsed_s if elapsed_s > 0 else None,
        "attempted_rps": len(outcomes) / elapsed_s if elapsed_s > 0 else None,
        "latency_p50_ms": percentile(ok, 50),
        "latency_p95_ms": percentile(ok, 95),
        "latency_p99_ms": percentile(ok, 99),
        "latency_max_ms": max(ok) if ok else None,
        "error_reasons": reasons,
        "busy_statuses": busy_status,
        "busy_with_retry_after": sum(1 for o in outcomes if o.category == "busy" and o.retry_after_s is not None),
    }


def step_passes(step: dict[str, Any], p95_target_ms: float) -> bool:
    p95 = step.get("latency_p95_ms")
    return (step["errors"] == 0 and step["busy"] == 0 and step["ok"] > 0 and p95 is not None
            and p95 <= p95_target_ms)


def safe_concurrency(steps: Sequence[dict[str, Any]], p95_target_ms: float) -> int | None:
    """The largest user count of the leading run of passing steps (see SAFE_RULE); None if the first fails."""
    safe = None
    for step in sorted(steps, key=lambda s: s["users"]):
        if not step_passes(step, p95_target_ms):
            break
        safe = step["users"]
    return safe


def server_overhead(outcomes: Sequence[Outcome], target_ms: float = OVERHEAD_TARGET_MS) -> dict[str, Any]:
    """HTTP end-to-end p50 − engine-time p50 over successful requests that reported their engine time."""
    pairs = [(o.latency_s * 1000, o.engine_ms) for o in outcomes if o.category == "ok" and o.engine_ms is not None]
    if not pairs:
        return {"overhead_ms": None, "target_ms": target_ms, "target_met": None, "requests": 0,
                "note": f"the server sent no {ENGINE_HEADER} header, so engine time is unknown"}
    http = [p[0] for p in pairs]
    engine = [p[1] for p in pairs]
    overhead = percentile(http, 50) - percentile(engine, 50)
    return {"overhead_ms": overhead, "http_p50_ms": percentile(http, 50), "engine_p50_ms": percentile(engine, 50),
            "median_per_request_ms": percentile([h - e for h, e in pairs], 50), "requests": len(pairs),
            "target_ms": target_ms, "target_met": overhead <= target_ms}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: treat as "no hint"


# ---- requests ------------------------------------------------------------------------------------------------
class Requests:
    """Request bodies per kind, from the seeded workload (Chinese texts of the stated length mix)."""

    def __init__(self, seed: int, model: str, candidates: int) -> None:
        self.texts, bands = wl.make_texts(400, seed)
        self.short = [t for t, b in zip(self.texts, bands, strict=True) if b == "query"] or self.texts[:1]
        self.sentences = [t for t, b in zip(self.texts, bands, strict=True) if b == "sentence"] or self.texts
        self.model = model
        self.candidates = candidates
        items = wl.nlu_items(1)
        self.nlu = [{"text": i["text"], "schema": i["schema"], "task": i["task"]} for i in items] or [
            {"text": self.sentences[0], "schema": {"人物": None, "地理位置": None}, "task": "extract"}]

    def build(self, kind: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
        if kind == "vectors_short":
            return "/v1/embeddings", {"input": [rng.choice(self.short)], "model": self.model}
        if kind == "vectors":
            return "/v1/embeddings", {"input": [rng.choice(self.texts)], "model": self.model}
        if kind in ("similarity", "rerank"):
            cands = [rng.choice(self.sentences) for _ in range(self.candidates)]
            return "/v1/similarity", {"source": rng.choice(self.short), "candidates": cands,
                                      "rerank": kind == "rerank"}
        if kind == "nlu":
            return "/v1/nlu", dict(rng.choice(self.nlu))
        if kind == "ui":  # the Vectors tab's event: texts, no file, normalise, no .npy
            return "/gradio_api/call/embed", {"data": [rng.choice(self.texts), None, True, False]}
        if kind == "metrics":
            return "/metrics", {}
        if kind == "badlogin":
            return "/v1/embeddings", {"input": [rng.choice(self.short)], "model": self.model}
        raise ValueError(kind)


BAD_LOGIN_ADDRESSES = 1024  # a guesser's addresses: the lockout's memory of them fills within a soak's warm-up


def benchmark_address(rng: random.Random) -> str:
    """One of BAD_LOGIN_ADDRESSES client addresses in 198.18.0.0/15 (RFC 2544's benchmarking range: never a real
    client). A fixed set, so the lockout's per-address memory (bounded at 10,000 addresses, ~1 KB each) fills
    during the warm-up instead of growing through the whole soak towards that bound."""
    n = rng.randrange(1, BAD_LOGIN_ADDRESSES + 1)
    return f"198.18.{n >> 8}.{n & 255}"


def _valid_body(kind: str, body: Any, sent: dict[str, Any]) -> str:  # noqa: ANN401
    """'' when a 2xx body has the documented shape, else what is wrong (counted as an error)."""
    if not isinstance(body, dict):
        return "2xx body is not a JSON object"
    if kind.startswith("vectors"):
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(sent["input"]):
            return "2xx embeddings body without one data item per input"
        if not all(isinstance(d, dict) and isinstance(d.get("embedding"), list) for d in data):
            return "2xx embeddings body: data items lack an embedding list"
    return ""


def judge(kind: str, status: int, text: str, sent: dict[str, Any]) -> tuple[str, str]:
    """(category, detail) of an answer: ok | busy | error, and for an error what was wrong. The httpx client and
    the locustfile judge answers alike through this."""
    category = classify(status)
    if kind == "badlogin":  # refused is the answer wanted; accepted would be a hole
        if status == 401:
            return "ok", ""
        if 200 <= status < 300:
            return "error", "a wrong password was accepted"
        return category, f"HTTP {status}" if category == "error" else ""
    if category == "error":
        return category, f"HTTP {status}"
    if category == "busy":
        return category, ""
    if kind == "ui":
        return ("ok", "") if text.startswith("event: complete") else ("error", "UI event did not complete")
    if kind == "metrics":
        return ("ok", "") if "wenmo_" in text else ("error", "GET /metrics without wenmo_ series")
    try:
        detail = _valid_body(kind, json.loads(text), sent)
    except ValueError:
        detail = "2xx body is not JSON"
    return ("error", detail) if detail else ("ok", "")


# ---- the async engine ------------------------------------------------------------------------------------------
def open_client(url: str, auth: tuple[str, str] | None, users: int, timeout_s: float):  # noqa: ANN201
    """An httpx.AsyncClient for `users` closed-loop users: a keep-alive connection each (and a few spare), every
    request bounded by `timeout_s`, no proxy from the environment (the target is on loopback)."""
    import httpx

    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    return httpx.AsyncClient(base_url=url, auth=auth, limits=limits, timeout=httpx.Timeout(timeout_s),
                             trust_env=False)


async def wait_ready(client: Any, url: str, timeout_s: float,  # noqa: ANN401
                     gone: Callable[[], str | None] | None = None) -> None:
    """Poll GET /readyz until 200; a clear error on 401/403, when the deadline passes, or as soon as `gone()`
    says why the server cannot answer any more (a child process that exited), instead of waiting out the
    deadline."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        why = gone() if gone is not None else None
        if why:
            raise ModelUnavailableError(why)
        try:
            r = await client.get("/readyz")
            if r.status_code == 200:
                return
            if r.status_code in (401, 403):
                raise InputError(f"{url}/readyz answered HTTP {r.status_code}: set WENMO_AUTH=user:password "
                                 "to the server's credentials")
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = type(e).__name__
        if time.monotonic() >= deadline:
            raise ModelUnavailableError(
                f"{url} was not ready within {timeout_s:g} s (last: {last}); start it "
                "with `python -m app serve` or raise --ready-timeout-s")
        await asyncio.sleep(0.5)


class Gate:
    """Lets the soak pause its users: `hold()` lets no new request start and waits for those in flight to finish;
    `release()` lets them go on."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        await self.open.wait()
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    async def hold(self, timeout_s: float) -> None:
        self.open.clear()
        await asyncio.wait_for(self.idle.wait(), timeout_s)

    def release(self) -> None:
        self.open.set()


class LoadTester:
    def __init__(self, opts: LoadOptions, auth: tuple[str, str] | None) -> None:
        self.opts = opts
        self.url = check_url(opts.url, opts.allow_remote)
        self.auth = auth
        self.requests = Requests(opts.seed, opts.model, opts.candidates)
        self.error_samples: dict[str, int] = {}  # distinct error answers → how many times (the soak's)
        self.locust_samples: list[str] = []  # the same from the locust runs
        # Why the server cannot answer any more (a tool that started it sets this), checked before every request:
        # a soak whose server died went on for two hours of refused connections (2026-11-28).
        self.gone: Callable[[], str | None] | None = None
        self.stopped: str | None = None

    def client(self, users: int):  # noqa: ANN201
        return open_client(self.url, self.auth, users, self.opts.request_timeout_s)

    async def wait_ready(self, client: Any) -> None:  # noqa: ANN401
        await wait_ready(client, self.url, self.opts.ready_timeout_s)

    async def _send(self, client: Any, kind: str, rng: random.Random, t0: float) -> Outcome:  # noqa: ANN401
        import httpx

        path, body = self.requests.build(kind, rng)
        start = time.perf_counter()
        try:
            r = await self._call(client, kind, path, body, rng)
        except httpx.TimeoutException:
            return Outcome(kind, "error", None, time.perf_counter() - start, start - t0, detail="timeout")
        except httpx.HTTPError as e:
            return Outcome(kind, "error", None, time.perf_counter() - start, start - t0, detail=type(e).__name__)
        latency = time.perf_counter() - start
        category, detail = judge(kind, r.status_code, r.text, body)
        if category == "error" and kind != "badlogin" and not 200 <= r.status_code < 300:
            sample = f"{kind} {path}: HTTP {r.status_code} {r.text[:200]!r}"
            if sample in self.error_samples or len(self.error_samples) < 20:
                self.error_samples[sample] = self.error_samples.get(sample, 0) + 1
        engine = r.headers.get(ENGINE_HEADER)
        try:
            engine_ms = float(engine) if engine is not None else None
        except ValueError:
            engine_ms = None
        return Outcome(kind, category, r.status_code, latency, start - t0, engine_ms,
                       _retry_after(r.headers.get("Retry-After")) if category == "busy" else None, detail)

    async def _call(self, client: Any, kind: str, path: str, body: dict[str, Any],  # noqa: ANN401
                    rng: random.Random) -> Any:  # noqa: ANN401
        """One request of `kind`; the UI's takes two calls (join the queue, read the event's stream)."""
        if kind == "metrics":
            return await client.get(path)
        if kind == "badlogin":
            # Without this client's session cookie, which would let the request in whatever its password.
            request = client.build_request("POST", path, json=body, headers={"X-Forwarded-For": benchmark_address(rng)})
            request.headers.pop("Cookie", None)
            return await client.send(request, auth=("wenmo-soak", "wrong-password"))
        r = await client.post(path, json=body)
        if kind != "ui" or r.status_code != 200:
            return r
        try:
            event = r.json()["event_id"]
        except (ValueError, KeyError, TypeError):
            return r
        return await client.get(f"{path}/{event}")

    async def run_stage(self, client: Any, users: int, duration_s: float, max_requests: int,  # noqa: ANN401
                        mix: dict[str, float], salt: int, outcomes: list[Outcome] | None = None,
                        gate: Gate | None = None) -> tuple[list[Outcome], float]:
        """`users` closed-loop users until the deadline or the request cap, whichever comes first; each answer
        is appended to `outcomes` (a new list unless given: the soak's memory poller counts it as it grows).
        With a `gate`, every request passes it (the soak pauses the users through it)."""
        outcomes = [] if outcomes is None else outcomes
        issued = 0
        t0 = time.perf_counter()
        deadline = t0 + duration_s
        kinds = list(mix)
        weights = [mix[k] for k in kinds]

        async def user(uid: int) -> None:
            nonlocal issued
            rng = random.Random((self.opts.seed + 1) * 1_000_003 + salt * 1009 + uid)
            while time.perf_counter() < deadline and issued < max_requests and self.stopped is None:
                async with gate.request() if gate is not None else contextlib.nullcontext():
                    if time.perf_counter() >= deadline:  # the deadline passed during a pause
                        break
                    if self.gone is not None and (why := self.gone()) is not None:
                        self.stopped = why
                        break
                    issued += 1
                    kind = rng.choices(kinds, weights)[0]
                    o = await self._send(client, kind, rng, t0)
                    outcomes.append(o)
                if o.category == "busy":
                    wait = min(o.retry_after_s or 0.0, self.opts.retry_after_cap_s, deadline - time.perf_counter())
                    if wait > 0:
                        await asyncio.sleep(wait)

        # The outer bound: the deadline, plus one request timeout for the calls in flight, plus slack.
        limit = duration_s + self.opts.request_timeout_s + 5
        tasks = [asyncio.ensure_future(user(i)) for i in range(users)]
        done, pending = await asyncio.wait(tasks, timeout=limit)
        for t in pending:
            t.cancel()
        for t in done:
            t.result()
        return outcomes, time.perf_counter() - t0

    async def scrape_memory(self, client: Any) -> dict[str, float] | None:  # noqa: ANN401
        import httpx

        try:
            r = await client.get("/metrics")
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        try:
            return memory_gauges(r.text)
        except ValueError:  # not the Prometheus text format: a failed scrape, like a non-200 answer
            return None

    def warmup_s(self) -> float:
        return min(self.opts.soak_warmup_s, self.opts.soak_s / 2)

    async def soak_with_metrics(self, client: Any, users: int, mix: dict[str, float],  # noqa: ANN401
                                on_warm: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """The soak with GET /metrics every interval under load, and every `settle_every_s` a settled sample (the
        users paused, nothing in flight, `settle_s` of quiet), and one settled sample after the load. Samples
        are (seconds, memory gauges, requests answered so far). `on_warm(requests answered)` is called once, in
        a thread, at the first sample after the warm-up (the soak command takes its first heap snapshot there).
        Returns outcomes, elapsed_s, paused_s, pauses ((start, end) seconds of each pause, the wait for the
        last settled sample included), samples, settled, scrapes_failed."""
        samples: list[tuple[float, dict[str, float], int]] = []
        settled: list[tuple[float, dict[str, float], int]] = []
        outcomes: list[Outcome] = []
        failed = 0
        pauses: list[tuple[float, float]] = []
        t0 = time.perf_counter()
        stop = asyncio.Event()
        warm = [on_warm]
        gate = Gate() if self.opts.settle_every_s > 0 else None

        async def every(interval_s: float) -> bool:
            """Wait one interval; False when the load ended meanwhile."""
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
                return False
            except TimeoutError:
                return True

        async def poll() -> None:
            nonlocal failed
            while True:
                g = await self.scrape_memory(client)
                now = time.perf_counter() - t0
                if g is None:
                    failed += 1
                else:
                    samples.append((now, g, len(outcomes)))
                if warm[0] is not None and now >= self.warmup_s():
                    hook, warm[0] = warm[0], None
                    await asyncio.to_thread(hook, len(outcomes))
                if not await every(self.opts.metrics_interval_s):
                    return

        async def settled_sample() -> None:
            nonlocal failed
            await asyncio.sleep(self.opts.settle_s)
            g = await self.scrape_memory(client)
            if g is None:
                failed += 1
            else:
                settled.append((time.perf_counter() - t0, g, len(outcomes)))

        async def settle(gate: Gate) -> None:
            while await every(self.opts.settle_every_s):
                began = time.perf_counter()
                try:
                    await gate.hold(self.opts.request_timeout_s + 5)
                    await settled_sample()
                except TimeoutError:
                    pass  # a request outlived its own timeout: no quiet moment this time
                finally:
                    gate.release()
                    pauses.append((began - t0, time.perf_counter() - t0))

        helpers = [asyncio.ensure_future(poll())]
        if gate is not None:
            helpers.append(asyncio.ensure_future(settle(gate)))
        _, elapsed = await self.run_stage(client, users, self.opts.soak_s, self.opts.soak_requests, mix, 3, outcomes,
                                          gate)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*helpers), self.opts.request_timeout_s + self.opts.settle_s + 10)
        g = await self.scrape_memory(client)  # one sample after the load, for the trend's end point
        if g is not None:
            samples.append((time.perf_counter() - t0, g, len(outcomes)))
        if gate is not None:
            await settled_sample()
            pauses.append((elapsed, time.perf_counter() - t0))
        paused = sum(end - start for start, end in pauses if start < elapsed)  # within the load, not the last wait
        return {"outcomes": outcomes, "elapsed_s": elapsed, "paused_s": paused, "pauses": pauses, "samples": samples,
                "settled": settled, "scrapes_failed": failed}

    async def soak(self, client: Any, users: int, on_warm: Callable[[int], Any] | None = None  # noqa: ANN401
                   ) -> dict[str, Any]:
        """The soak stage's report: the load summary, the memory trend per gauge and the verdict. The verdict fits
        the settled samples when there are enough after the warm-up (else those under load), at the rate under
        load over the fitted window (`window_rate`: the pauses are not the server's doing, and a warm-up slowed by
        something else on the machine does not dilute it)."""
        mix = parse_mix(self.opts.soak_mix, "--soak-mix")
        run = await self.soak_with_metrics(client, users, mix, on_warm)
        outs, el, samples, settled = run["outcomes"], run["elapsed_s"], run["samples"], run["settled"]
        summary = summarize(outs, users, el)
        loaded_s = el - run["paused_s"]
        overall = len(outs) / loaded_s if loaded_s > 0 else summary["attempted_rps"]
        series = "settled" if sum(row[0] >= self.warmup_s() for row in settled) >= MIN_FIT_POINTS else "under load"
        fitted = settled if series == "settled" else samples
        rate = window_rate(fitted, self.warmup_s(), run["pauses"]) or overall
        out = {"kind": "mixed", "mix": {k: round(v, 4) for k, v in mix.items()}, **summary,
               "by_kind": {k: summarize([x for x in outs if x.kind == k], users, el) for k in mix},
               "paused_s": run["paused_s"], "pauses": run["pauses"], "rate_under_load_rps": overall,
               "memory": memory_trend(samples), "memory_samples": samples, "settled_samples": settled,
               "metrics_scrapes_failed": run["scrapes_failed"],
               "verdict": memory_verdict(fitted, self.warmup_s(), rate,
                                         self.opts.memory_budget_mib_per_day, series=series)}
        if samples and not any(g for _, g, _n in samples):
            out["memory_note"] = "GET /metrics has no memory gauge"
        return out

    async def run(self) -> dict[str, Any]:
        from bench.locustrun import locust_version, overhead, plan_env, stage_entry, summary

        o = self.opts
        mix = parse_mix(o.mix)
        parse_mix(o.soak_mix, "--soak-mix")  # a mistake fails now, not after the ramp
        steps_users = ramp_users(o.users, o.ramp_steps)
        report: dict[str, Any] = {
            "schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "url": self.url, "command": o.command, "p95_target_ms": o.p95_target_ms,
            "auth": "basic (WENMO_AUTH)" if self.auth else "none (WENMO_AUTH unset)",
            "options": {k: v for k, v in o.__dict__.items() if k != "command"},
            "workload": {"vectors": "one text per request: " + wl.describe(),
                         "baseline": "one short query (4–24 chars) per request",
                         "similarity": f"a short query against {o.candidates} sentences (16–96 chars)",
                         "nlu": "the RexUniNLU presets' example texts and schemas",
                         "ui": "the Vectors tab's event (POST /gradio_api/call/embed + its stream), one text",
                         "metrics": "GET /metrics",
                         "badlogin": "a wrong password from an address in 198.18.0.0/15 (X-Forwarded-For)"},
            "load_generator": {"baseline, ramp, mixed": f"locust {locust_version()} (bench/locustfile.py, headless)",
                               "soak": "httpx asyncio closed loops (pauses for settled samples)"},
            "stages": {},
        }
        stages = report["stages"]
        async with self.client(max(steps_users + [o.users, o.soak_users, 1])) as client:
            await self.wait_ready(client)
            first = [name for name in ("baseline", "ramp") if name in o.stages]
            if first:  # one locust run for both: one start-up
                run = await asyncio.to_thread(self.locust, plan_env(
                    stages=first, users=o.users, ramp_steps=steps_users, baseline_s=o.baseline_s,
                    baseline_requests=o.baseline_requests, step_s=o.step_s, step_requests=o.step_requests))
            if "baseline" in o.stages:
                stages["baseline"] = {"kind": "vectors_short",
                                      **summary(run, stage_entry(run, "baseline"), ["vectors_short"])}
                report["overhead"] = overhead(run)
            else:
                stages["baseline"] = {"skipped": "not in --stages"}
                report["overhead"] = {"overhead_ms": None, "note": "baseline stage not run", "target_ms":
                                      OVERHEAD_TARGET_MS, "target_met": None}
            safe = None
            if "ramp" in o.stages:
                steps = []
                for n in steps_users:
                    step = summary(run, stage_entry(run, f"ramp-{n}"), ["vectors"])
                    step["passes"] = step_passes(step, o.p95_target_ms)
                    steps.append(step)
                safe = safe_concurrency(steps, o.p95_target_ms)
                stages["ramp"] = {"kind": "vectors", "steps": steps, "safe_concurrency": safe, "safe_rule": SAFE_RULE}
            else:
                stages["ramp"] = {"skipped": "not in --stages"}
            fixed = o.soak_users or safe or max(1, o.users // 2)
            if "soak" in o.stages:
                stages["soak"] = await self.soak(client, fixed)
            else:
                stages["soak"] = {"skipped": "not in --stages"}
            if "mixed" in o.stages:  # after the soak: its users are the safe concurrency the ramp found
                run = await asyncio.to_thread(self.locust, plan_env(
                    stages="mixed", users=fixed, soak_users=fixed, mixed_users=fixed, mixed_s=o.mixed_s,
                    mixed_requests=o.mixed_requests, mix=o.mix))
                entry = stage_entry(run, "mixed")
                stages["mixed"] = {"kind": "mixed", "mix": {k: round(v, 4) for k, v in mix.items()},
                                   **summary(run, entry, list(mix)),
                                   "by_kind": {kind: summary(run, entry, [kind]) for kind in mix}}
            else:
                stages["mixed"] = {"skipped": "not in --stages"}
        report["error_samples"] = [f"{n}× {s}" for s, n in self.error_samples.items()] + self.locust_samples
        return report

    def locust(self, plan: dict[str, str]) -> LocustRun:
        """One headless locust run of `plan` (WENMO_LOCUST_* variables) against this URL, read back."""
        from bench.locustrun import error_samples, plan_env, plan_from_env, run_locust, stage_seconds

        o = self.opts
        plan = {**plan, **plan_env(seed=o.seed, model=o.model, request_timeout_s=o.request_timeout_s)}
        timeout = stage_seconds(plan_from_env(plan)) + o.request_timeout_s + 60  # + start-up and shut-down
        with tempfile.TemporaryDirectory(prefix="wenmo-locust-") as out:
            run = run_locust(self.url, plan, self.auth, Path(out), timeout, o.allow_remote)
        self.locust_samples += error_samples(run)
        return run


def run(opts: LoadOptions, auth: tuple[str, str] | None) -> dict[str, Any]:
    return asyncio.run(LoadTester(opts, auth).run())
