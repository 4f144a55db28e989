"""`bench-batching`: the engine's batching across requests, on against off, through the real HTTP service.

One run starts `python -m app serve` twice, one after the other, on the same model — once with
WENMO_BATCH_ACROSS_REQUESTS=on, once with off — and puts the same load on each:

    idle      every comparison text (`--compare-texts`, the first texts of the pool) sent alone, one after the
              other: the single-request reference vectors of that server
    warm-up   every user sends `--warmup` texts (not counted)
    load      `--users` closed-loop users, each sending `--requests` single short texts (the query band, 4–24
              characters) to POST /v1/embeddings back to back; text k of the run is pool[k mod pool size]
              (k = request number × users + user), so every comparison text is sent under load too

and reports per server texts/s (answered texts / wall time of the load), p50/p95/p99 latency (HTTP end to end),
errors and busy answers, the cap the server used (`wenmo_max_concurrent` from /metrics, `event=limits` from its
log), and the lowest cosine between a vector answered under load and the same text's idle vector; plus the
lowest cosine between the two servers' idle vectors. Then the ratios on/off and the issue's targets:
texts/s on ≥ 1.5× off on a CPU (≥ 5× on a GPU), p95 on ≤ off, every cosine ≥ 0.99999.

`--rounds R` repeats both servers R times, alternating which starts first; per mode the round with the most
texts/s counts (every round is in the JSON). Settings other than the models and the switch reach both servers
alike: flags given to this command and WENMO_* variables in its environment. The servers listen on free
loopback ports; credentials are WENMO_AUTH (or, when unset, a random user:password made for this run), handed
over in the environment, never on a command line.

Imports app.config, app.errors, app.engine.loading (to find a `--model` checkpoint) and bench modules; torch only
through the replica builder (bench.suite), httpx inside the async part. Nothing under app/ imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.config import Settings
from app.engine.loading import resolve_model
from app.errors import InputError, ModelUnavailableError
from bench import workload as wl
from bench.loadtest import Outcome, _retry_after, _valid_body, classify, open_client, summarize, wait_ready
from bench.prometheus import metric_name, parse_samples
from bench.serverchild import ServerChild, free_port, serve_env
from bench.stats import percentile, ratio
from bench.suite import build_fixture, replica_root

SCHEMA = "wenmo-bench-batching/1"
MODES = ("on", "off")
SWITCH_ENV = "WENMO_BATCH_ACROSS_REQUESTS"
POOL_TEXTS = 256  # distinct texts the load cycles through (the first `compare_texts` of them are compared)
TARGET_RATIO_CPU = 1.5
TARGET_RATIO_GPU = 5.0
TARGET_MIN_COSINE = 0.99999
# In bf16/fp16 a text's vector depends a little on the batch it rides in (other shapes, other GEMM tilings): on an
# H200 in bf16 the lowest cosine under load was 0.99987 (2026-11-27), the same size as bf16's own distance from fp32
# (min cos 0.99987 against the fp32 library in the same day's bench). The floor is the one tests/gpu sets for
# half precision against fp32: batching may cost no more than half precision itself does.
TARGET_MIN_COSINE_HALF = 0.999
RETRY_AFTER_CAP_S = 5.0
PROGRESS_EVERY_S = 30.0  # a line during a long load, so a full-size run does not look stuck
# /metrics samples kept per server: the caps it used, what it turned away, and whatever batching gauges the
# engine exposes (names containing "batch"), read after the load.
METRIC_KEYS = ("wenmo_max_concurrent", "wenmo_max_queue", "wenmo_limiter_rejected_total")
LOG_PATTERNS = ("event=limits", "plan device=", "across_requests")  # the plan, the caps, the switch per queue


@dataclass
class BatchingOptions:
    size: str = "tiny"
    model: str = ""  # a real GTE checkpoint (dir or ModelScope id) instead of the replica
    models_dir: str = ""  # "": <state dir>/bench-models
    users: int = 16
    requests: int = 32  # per user, timed: 512 texts at 16 users, a few minutes for a full-size CPU run
    warmup: int = 2  # per user, before the timed load
    compare_texts: int = 32
    rounds: int = 1
    seed: int = 0
    client_timeout_s: float = 120.0
    ready_timeout_s: float = 600.0
    keep_work_dir: bool = False
    command: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- pure pieces ------------------------------------------------------------------------------------------
def check_options(o: BatchingOptions) -> None:
    if o.size not in ("tiny", "full"):
        raise InputError(f"--size {o.size!r}: choose tiny or full")
    if not 1 <= o.compare_texts <= POOL_TEXTS:
        raise InputError(f"--compare-texts {o.compare_texts}: give 1 to {POOL_TEXTS}")
    if o.users * o.requests < o.compare_texts:
        raise InputError(f"--users {o.users} × --requests {o.requests} = {o.users * o.requests} texts under load, "
                         f"fewer than --compare-texts {o.compare_texts}: every comparison text must be sent under "
                         "load at least once; raise --requests or lower --compare-texts")
    if o.warmup < 0:
        raise InputError(f"--warmup {o.warmup}: give 0 or more requests per user")


def text_pool(seed: int, n: int = POOL_TEXTS) -> list[str]:
    """`n` seeded texts of the query band only (4–24 characters)."""
    texts, _ = wl.make_texts(n, seed, (wl.BANDS[0],))
    return texts


def pool_index(user: int, request: int, users: int, pool_size: int) -> int:
    """Which pool text user `user` sends as its `request`-th: the run's k-th text (k = request × users + user)
    is pool[k mod pool size], so the first texts of the pool go out at the start of the load, when every user
    is sending, and again on each pass over the pool."""
    return (request * users + user) % pool_size


def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine of two vectors; None when their lengths differ or one is zero (which no comparison passes)."""
    if len(a) != len(b) or not a:
        return None
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = sum(x * x for x in a) ** 0.5, sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else None


def compare(reference: Mapping[int, Sequence[float] | None], seen: Mapping[int, Sequence[Sequence[float]]]
            ) -> dict[str, Any]:
    """Every vector in `seen` (pool index → vectors answered under load) against `reference` (pool index →
    the idle vector, None where the idle request failed): how many were compared, which texts were never
    answered under load, the lowest cosine and the largest component difference. A misshapen vector makes the
    lowest cosine None; `complete` says every text had its idle vector and at least one answer under load."""
    cosines: list[float | None] = []
    max_abs = 0.0
    for idx, ref in reference.items():
        if ref is None:
            continue
        for vec in seen.get(idx, ()):
            cosines.append(cosine(vec, ref))
            if len(vec) == len(ref):
                max_abs = max(max_abs, max((abs(x - y) for x, y in zip(vec, ref, strict=True)), default=0.0))
    missing = sorted(i for i in reference if not seen.get(i))
    low = None if not cosines or any(c is None for c in cosines) else min(c for c in cosines if c is not None)
    no_idle = sorted(i for i, ref in reference.items() if ref is None)
    return {"texts": len(reference), "vectors_compared": len(cosines), "texts_not_seen": missing,
            "texts_without_idle_vector": no_idle, "complete": bool(reference) and not missing and not no_idle,
            "min_cosine": low, "max_abs_diff": max_abs if cosines else None}


def best_round(rounds: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The round with the most texts/s (a burst of other load on a shared machine only ever slows a round)."""
    done = [r for r in rounds if r.get("texts_per_s") is not None]
    return max(done, key=lambda r: r["texts_per_s"]) if done else None


def device_of(plan_line: str | None) -> str:
    """`cpu` or `cuda…` from the server's plan log line (`plan device=cuda:0 dtype=…`); `unknown` without one."""
    m = re.search(r"plan device=(\S+)", plan_line or "")
    return m.group(1) if m else "unknown"


def dtype_of(plan_line: str | None) -> str:
    """The dtype of the server's plan log line (`plan device=cuda:0 dtype=bf16 …`); `unknown` without one."""
    m = re.search(r"\bdtype=(\S+)", plan_line or "")
    return m.group(1) if m else "unknown"


def min_cosine_target(dtype: str) -> float:
    return TARGET_MIN_COSINE_HALF if dtype in ("bf16", "fp16") else TARGET_MIN_COSINE


def checks(on: dict[str, Any] | None, off: dict[str, Any] | None, min_cos: float | None, device: str,
           dtype: str = "fp32") -> list[dict[str, Any]]:
    """The issue's targets as pass/fail with the figures: texts/s on/off (≥ 1.5 on a CPU, ≥ 5 on a GPU), p95
    on ≤ off, every cosine ≥ 0.99999 (0.999 in bf16/fp16: min_cosine_target), and every request of both loads
    answered (no errors, no busy answers)."""
    gpu = device.startswith("cuda")
    target = TARGET_RATIO_GPU if gpu else TARGET_RATIO_CPU
    floor = min_cosine_target(dtype)
    on, off = on or {}, off or {}
    tput = ratio(on.get("texts_per_s"), off.get("texts_per_s"))
    p95_on, p95_off = on.get("latency_p95_ms"), off.get("latency_p95_ms")
    answered = [m for m in (on, off) if m]
    clean = len(answered) == 2 and all(m.get("errors") == 0 and m.get("busy") == 0 for m in answered)
    return [
        {"target": f"texts/s on ≥ {target:g}× off ({'GPU' if gpu else 'CPU'})", "value": tput,
         "pass": tput is not None and tput >= target},
        {"target": "p95 latency on ≤ off", "value": ratio(p95_on, p95_off),
         "pass": p95_on is not None and p95_off is not None and p95_on <= p95_off},
        {"target": f"vectors under load = idle single-request vectors (min cosine ≥ {floor}, {dtype})",
         "value": min_cos, "pass": min_cos is not None and min_cos >= floor},
        {"target": "every request answered (no errors, no busy answers), both modes",
         "value": sum(m.get("errors", 0) + m.get("busy", 0) for m in answered), "pass": clean},
    ]


def child_env(base: Mapping[str, str], *, mode: str, port: int, models: Mapping[str, Path], auth: str,
              settings_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of one `python -m app serve` child: the caller's, then the settings given to this command
    as flags (as WENMO_* variables), then what this tool decides — the switch, the models, a loopback port, the
    credentials, INFO logging (the tool reads the plan and limits lines)."""
    return serve_env(base, settings_env, {
        SWITCH_ENV: mode, "WENMO_HOST": "127.0.0.1", "WENMO_PORT": str(port), "WENMO_AUTH": auth,
        "WENMO_EMBED_MODEL": str(models["embed"]), "WENMO_CROSS_MODEL": str(models["cross"]),
        "WENMO_NLU_MODEL": str(models["nlu"]), "WENMO_LOG_LEVEL": "INFO",
    })


def log_facts(text: str) -> list[str]:
    """The server log's messages about the plan, the limits and the batching switch, without the time stamp and
    logger name, cut at 300 characters (the plan line goes on to describe ds_config.json)."""
    return [line.split(": ", 1)[-1][:300].strip() for line in text.splitlines()
            if any(p in line for p in LOG_PATTERNS)]


def switch_from_log(text: str) -> str | None:
    """What the server says its embedding queue does (`event=work_queue role=embed across_requests=on`), or None
    when it does not say."""
    m = re.search(r"role=embed across_requests=(\w+)", text)
    return m.group(1) if m else None


def limits_from_log(text: str) -> dict[str, int]:
    m = re.search(r"event=limits max_concurrent=(\d+) max_queue=(\d+)", text)
    return {"max_concurrent": int(m.group(1)), "max_queue": int(m.group(2))} if m else {}


def kept_metrics(text: str) -> dict[str, float]:
    out = {}
    for key, value in parse_samples(text).items():
        name = metric_name(key)
        if name in METRIC_KEYS or ("batch" in name and not name.endswith("_bucket")):
            out[key] = value
    return out


# ---- load -------------------------------------------------------------------------------------------------
class Session:
    """The HTTP side of one server's measurement: idle reference vectors, warm-up, the timed load."""

    def __init__(self, client: Any, pool: list[str], opts: BatchingOptions,  # noqa: ANN401
                 progress: Progress = _stderr) -> None:
        self.client = client
        self.pool = pool
        self.opts = opts
        self.progress = progress
        self.error_samples: dict[str, int] = {}

    async def send(self, text: str, t0: float) -> tuple[Outcome, list[float] | None]:
        import httpx

        body = {"input": [text]}
        start = time.perf_counter()
        try:
            r = await self.client.post("/v1/embeddings", json=body)
        except httpx.TimeoutException:
            return Outcome("vectors", "error", None, time.perf_counter() - start, start - t0, detail="timeout"), None
        except httpx.HTTPError as e:
            return (Outcome("vectors", "error", None, time.perf_counter() - start, start - t0,
                            detail=type(e).__name__), None)
        latency = time.perf_counter() - start
        category, detail, vector = classify(r.status_code), "", None
        if category == "ok":
            try:
                answer = r.json()
                detail = _valid_body("vectors", answer, body)
            except ValueError:
                detail = "2xx body is not JSON"
            if detail:
                category = "error"
            else:
                vector = [float(x) for x in answer["data"][0]["embedding"]]
        elif category == "error":
            detail = f"HTTP {r.status_code}"
            sample = f"/v1/embeddings: HTTP {r.status_code} {r.text[:200]!r}"
            if sample in self.error_samples or len(self.error_samples) < 20:
                self.error_samples[sample] = self.error_samples.get(sample, 0) + 1
        engine = r.headers.get("X-Wenmo-Engine-Ms")
        try:
            engine_ms = float(engine) if engine is not None else None
        except ValueError:
            engine_ms = None
        busy_wait = _retry_after(r.headers.get("Retry-After")) if category == "busy" else None
        return Outcome("vectors", category, r.status_code, latency, start - t0, engine_ms, busy_wait, detail), vector

    async def idle_vectors(self) -> tuple[dict[int, list[float] | None], list[Outcome]]:
        """Each comparison text alone, one after the other, on the otherwise idle server (None: no answer)."""
        refs: dict[int, list[float] | None] = {}
        outcomes = []
        t0 = time.perf_counter()
        for idx in range(self.opts.compare_texts):
            outcome, refs[idx] = await self.send(self.pool[idx], t0)
            outcomes.append(outcome)
        return refs, outcomes

    async def load(self, per_user: int, offset: int, keep: int
                   ) -> tuple[list[Outcome], dict[int, list[list[float]]], float]:
        """`users` closed-loop users, `per_user` texts each; the vectors of pool texts below `keep` are kept.
        `offset` shifts the pool (the warm-up sends other texts than the timed load starts with)."""
        users = self.opts.users
        outcomes: list[Outcome] = []
        seen: dict[int, list[list[float]]] = {}
        t0 = last_said = time.perf_counter()

        async def user(uid: int) -> None:
            nonlocal last_said
            for i in range(per_user):
                idx = (pool_index(uid, i, users, len(self.pool)) + offset) % len(self.pool)
                outcome, vec = await self.send(self.pool[idx], t0)
                outcomes.append(outcome)
                if time.perf_counter() - last_said >= PROGRESS_EVERY_S:
                    last_said = time.perf_counter()
                    self.progress(f"bench-batching:   {len(outcomes)}/{users * per_user} answered after "
                                  f"{last_said - t0:.0f} s")
                if vec is not None and idx < keep:
                    seen.setdefault(idx, []).append(vec)
                if outcome.category == "busy":
                    await asyncio.sleep(min(outcome.retry_after_s or 0.0, RETRY_AFTER_CAP_S))

        # Every request is bounded by the client's timeout and every user by its count, so this ends by itself.
        await asyncio.gather(*(user(u) for u in range(users)))
        return outcomes, seen, time.perf_counter() - t0

    async def metrics(self) -> dict[str, float]:
        import httpx

        try:
            r = await self.client.get("/metrics")
        except httpx.HTTPError:
            return {}
        if r.status_code != 200:
            return {}
        try:
            return kept_metrics(r.text)
        except ValueError:  # not the Prometheus text format: nothing to keep, like a non-200 answer
            return {}


def load_summary(outcomes: Sequence[Outcome], users: int, elapsed_s: float) -> dict[str, Any]:
    s = summarize(outcomes, users, elapsed_s)
    s["texts_per_s"] = s.pop("throughput_rps")  # one text per request: answered texts / wall time
    engine = [o.engine_ms for o in outcomes if o.category == "ok" and o.engine_ms is not None]
    s["engine_p50_ms"] = percentile(engine, 50)
    s["engine_p95_ms"] = percentile(engine, 95)
    return s


async def measure(server: ServerChild, url: str, auth: tuple[str, str], pool: list[str], opts: BatchingOptions,
                  progress: Progress) -> dict[str, Any]:
    """One server, from its start to the end of its load: readiness, idle vectors, warm-up, timed load."""
    async with open_client(url, auth, opts.users, opts.client_timeout_s) as client:
        started = time.perf_counter()
        await wait_ready(client, url, opts.ready_timeout_s, server.gone)
        ready_s = time.perf_counter() - started
        session = Session(client, pool, opts, progress)
        progress(f"bench-batching: {server.label} ready after {ready_s:.1f} s; "
                 f"{opts.compare_texts} texts alone, then {opts.users} users × {opts.requests} texts")
        refs, idle = await session.idle_vectors()
        if opts.warmup:
            await session.load(opts.warmup, POOL_TEXTS // 2, 0)
        outcomes, seen, elapsed = await session.load(opts.requests, 0, opts.compare_texts)
        after = await session.metrics()
        why = server.gone()
        if why:
            raise ModelUnavailableError(why)
    result = load_summary(outcomes, opts.users, elapsed)
    idle_ok = [o for o in idle if o.category == "ok"]
    result.update({
        "ready_s": ready_s,
        "idle": {"requests": len(idle), "ok": len(idle_ok),
                 "latency_p50_ms": percentile([o.latency_s * 1000 for o in idle_ok], 50),
                 "engine_p50_ms": percentile([o.engine_ms for o in idle_ok if o.engine_ms is not None], 50)},
        "vectors": compare(refs, seen),
        "metrics": after,
        "error_samples": [f"{n}× {s}" for s, n in session.error_samples.items()],
    })
    result["_refs"] = refs  # for the comparison across servers; dropped before the JSON is written
    return result


# ---- models -----------------------------------------------------------------------------------------------
def serve_models(opts: BatchingOptions, settings: Settings, progress: Progress) -> tuple[dict[str, Path], str]:
    """The embedding model under test (the replica of `--size`, or `--model`) and tiny replicas for the other
    two roles: `serve` loads all three, and only the embedding model is measured."""
    if opts.model:
        embed, what = resolve_model(opts.model, settings.model_dir), f"checkpoint {opts.model}"
    else:
        root = replica_root(opts.models_dir, settings.state_dir, opts.size)
        progress(f"bench-batching: preparing the {opts.size} gte replica under {root}")
        embed, what = build_fixture("embed", root, opts.size == "full"), f"{opts.size} replica (random weights)"
    tiny = replica_root(opts.models_dir, settings.state_dir, "tiny")
    return {"embed": embed, "cross": build_fixture("cross", tiny, False),
            "nlu": build_fixture("nlu", tiny, False)}, what


def architecture(model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: config.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                       "intermediate_size", "vocab_size")}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


# ---- the run ----------------------------------------------------------------------------------------------
def run(opts: BatchingOptions, settings: Settings, settings_env: Mapping[str, str],
        base_env: Mapping[str, str] | None = None, progress: Progress = _stderr) -> dict[str, Any]:
    """Both servers, `rounds` times, and the comparison. `settings_env`: the settings given to this command as
    flags, as WENMO_* variables for the children; `base_env`: the children's environment before that (default:
    this process's)."""
    check_options(opts)
    base = dict(os.environ if base_env is None else base_env)
    auth_text, auth_origin = settings.auth, "WENMO_AUTH"
    if not auth_text:  # token_urlsafe has no ':' in it
        auth_text, auth_origin = f"bench:{secrets.token_urlsafe(18)}", "generated for this run (WENMO_AUTH unset)"
    user, sep, password = auth_text.partition(":")
    if not sep:
        raise InputError("WENMO_AUTH must be user:password")
    auth = (user, password)
    models, what = serve_models(opts, settings, progress)
    pool = text_pool(opts.seed)
    work = Path(tempfile.mkdtemp(prefix="wenmo-bench-batching-"))
    cap = settings_env.get("WENMO_MAX_CONCURRENT") or base.get("WENMO_MAX_CONCURRENT")
    cap_setting = f"WENMO_MAX_CONCURRENT={cap}" if cap else "default"
    report: dict[str, Any] = {
        "schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": opts.command, "machine": machine(), "options": asdict(opts),
        "model": {"embed": str(models["embed"]), "what": what, "architecture": architecture(models["embed"]),
                  "other_roles": "tiny replicas (serve loads every role; only the embedding model is measured)"},
        "workload": {"band": "query", "chars": [wl.BANDS[0].min_chars, wl.BANDS[0].max_chars], "seed": opts.seed,
                     "pool_texts": len(pool), "users": opts.users, "requests_per_user": opts.requests,
                     "warmup_per_user": opts.warmup, "compare_texts": opts.compare_texts,
                     "route": "POST /v1/embeddings, one text per request, encoding_format float",
                     "pool_chars": {"min": min(map(len, pool)), "p50": percentile([len(t) for t in pool], 50),
                                    "max": max(map(len, pool))},
                     "comparison_texts": pool[:opts.compare_texts]},
        "servers": {m: {"env": {SWITCH_ENV: m}, "max_concurrent_setting": cap_setting, "rounds": []} for m in MODES},
        "auth": auth_origin, "settings_env": dict(settings_env), "notes": [],
    }
    refs: dict[str, dict[int, list[float]]] = {}
    failed = True  # until every server has run: then the logs the error names are kept
    try:
        for r in range(opts.rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]  # alternate who goes first: drift hits both alike
            for mode in order:
                port = free_port()
                env = child_env(base, mode=mode, port=port, models=models, auth=auth_text, settings_env=settings_env)
                label = f"{mode}-r{r + 1}"
                progress(f"bench-batching: round {r + 1}/{opts.rounds}: starting serve with {SWITCH_ENV}={mode} on "
                         f"port {port}")
                server = ServerChild(f"{SWITCH_ENV}={mode}", env, work / f"serve-{label}.log")
                try:
                    result = asyncio.run(measure(server, f"http://127.0.0.1:{port}", auth, pool, opts, progress))
                finally:
                    code = server.stop()
                text = server.log_text()
                idle_refs = result.pop("_refs")
                refs.setdefault(mode, {}).update(idle_refs)
                result.update({"round": r + 1, "exit_status": code, "log_limits": limits_from_log(text),
                               "log_facts": log_facts(text), "switch_logged": switch_from_log(text)})
                entry = report["servers"][mode]
                # The first components of each idle vector: enough to check them against an independent forward.
                entry.setdefault("idle_vector_heads", {str(i): v[:4] if v else None
                                                       for i, v in sorted(idle_refs.items())})
                if result["switch_logged"] not in (None, mode):
                    report["notes"].append(f"round {r + 1}: the server started with {SWITCH_ENV}={mode} logged "
                                           f"across_requests={result['switch_logged']} for its embedding queue")
                entry["rounds"].append(result)
                entry.setdefault("plan", next((x for x in result["log_facts"] if "plan device=" in x), None))
                progress(f"bench-batching: {SWITCH_ENV}={mode}: {result['texts_per_s'] or 0:.2f} texts/s, p95 "
                         f"{result['latency_p95_ms'] or 0:.0f} ms, {result['errors']} errors, {result['busy']} busy")
        failed = False
    finally:
        if opts.keep_work_dir or failed:
            report["work_dir"] = str(work)
            progress(f"bench-batching: the servers' logs are kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return finish(report, refs)


def finish(report: dict[str, Any], refs: Mapping[str, Mapping[int, Sequence[float]]]) -> dict[str, Any]:
    """Best round per mode, the ratios on/off, the agreement figures and the checks, into `report`."""
    best = {m: best_round(report["servers"][m]["rounds"]) for m in MODES}
    for m in MODES:
        report["servers"][m]["best"] = best[m]
        b = best[m] or {}
        report["servers"][m]["max_concurrent"] = (b.get("metrics", {}).get("wenmo_max_concurrent")
                                                  or b.get("log_limits", {}).get("max_concurrent"))
    across = compare(refs.get("off", {}), {i: [v] for i, v in refs.get("on", {}).items() if v is not None})
    comparisons = [r["vectors"] for m in MODES for r in report["servers"][m]["rounds"]] + [across]
    # Strict: a text without its idle vector, or never answered under load, fails the check like a low cosine.
    usable = len(comparisons) > 1 and all(c["complete"] and c["min_cosine"] is not None for c in comparisons)
    min_cos = min(c["min_cosine"] for c in comparisons) if usable else None
    on, off = best["on"] or {}, best["off"] or {}
    report["comparison"] = {
        "texts_per_s_ratio": ratio(on.get("texts_per_s"), off.get("texts_per_s")),
        "p50_ratio": ratio(on.get("latency_p50_ms"), off.get("latency_p50_ms")),
        "p95_ratio": ratio(on.get("latency_p95_ms"), off.get("latency_p95_ms")),
        "p99_ratio": ratio(on.get("latency_p99_ms"), off.get("latency_p99_ms")),
        "idle_on_vs_off": across,
        "min_cosine": min_cos,
        "min_cosine_rule": "lowest of: each mode's vectors under load against its own idle single-request vectors "
                           "(every round), and the two servers' idle vectors against each other; none (fails) when "
                           "a comparison text lacks its idle vector or was not answered under load",
    }
    plan = report["servers"]["on"].get("plan") or report["servers"]["off"].get("plan")
    report["device"] = device_of(plan)
    report["checks"] = checks(best["on"], best["off"], min_cos, report["device"], dtype_of(plan))
    report["targets_met"] = all(c["pass"] for c in report["checks"])
    rounds = report["options"]["rounds"]
    report["notes"].append("texts/s: answered texts / wall time of the timed load (all users, from the first send "
                           "to the last answer); latency: HTTP end to end per request, answered requests only")
    if rounds > 1:
        report["notes"].append(f"{rounds} rounds, alternating which mode starts first, each server started afresh; "
                               "per mode the round with the most texts/s counts (all rounds are kept)")
    return report
