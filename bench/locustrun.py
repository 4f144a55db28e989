"""Locust as the load generator: the stage plan `bench/locustfile.py` reads from the environment, the headless
`python -m locust` subprocess `loadtest` runs, and reading its statistics back into the loadtest report.

Nothing here imports locust: locust monkey-patches the whole process for gevent on import, which must never happen
in the server, in `python -m app loadtest` (its soak runs on asyncio) or in pytest. Locust runs in its own process.

The plan (every variable optional; the defaults in brackets):

    WENMO_LOCUST_STAGES            stages in order [baseline,ramp,soak,mixed]
    WENMO_LOCUST_USERS             most users: the ramp's top step [8]
    WENMO_LOCUST_RAMP_STEPS        the ramp's user counts [1,2,4,… WENMO_LOCUST_USERS]
    WENMO_LOCUST_BASELINE_S / _STEP_S / _SOAK_S / _MIXED_S   seconds per stage (per ramp step) [30/15/60/30]
    WENMO_LOCUST_BASELINE_REQUESTS / _STEP_REQUESTS / _SOAK_REQUESTS / _MIXED_REQUESTS
                                   request cap per stage (per ramp step); 0: none [0]
    WENMO_LOCUST_SOAK_USERS        users of the soak [half of WENMO_LOCUST_USERS]
    WENMO_LOCUST_MIXED_USERS       users of mixed [WENMO_LOCUST_SOAK_USERS]
    WENMO_LOCUST_MIX, WENMO_LOCUST_SOAK_MIX   request mixes, the syntax of --mix [loadtest's defaults]

Requests are named `<stage> <kind>` (stage: baseline, ramp-N, soak, mixed); busy answers (429/503) are reported
as failures named `<stage> <kind> busy` and other failures as `<stage> <kind> error`, so the plain row holds the
successful requests only: its percentiles are those of answered requests, as in the httpx client.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import InputError
from bench.loadtest import (
    DEFAULT_MIX,
    DEFAULT_SOAK_MIX,
    STAGE_NAMES,
    Outcome,
    parse_mix,
    ramp_users,
    server_overhead,
)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PREFIX = "WENMO_LOCUST_"
BUSY_SUFFIX = " busy"
ERROR_SUFFIX = " error"
SPAWN_RATE = 100.0  # users started per second: a step's users all start within a fraction of a second


@dataclass(frozen=True)
class Stage:
    label: str  # baseline | ramp-N | soak | mixed: the first word of its requests' names
    name: str  # baseline | ramp | soak | mixed
    users: int
    seconds: float
    cap: int  # request cap; 0: none
    mix: tuple[tuple[str, float], ...]


def _number(env: Mapping[str, str], key: str, default: float, kind: type = float, minimum: float = 0) -> Any:  # noqa: ANN401
    text = env.get(PREFIX + key, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InputError(f"{PREFIX}{key}={text!r}: give a {'whole ' if kind is int else ''}number") from None
    if value < minimum:
        raise InputError(f"{PREFIX}{key}={text!r}: must be ≥ {minimum:g}")
    return value


def plan_from_env(env: Mapping[str, str]) -> list[Stage]:
    """The stages of a locust run from WENMO_LOCUST_* variables; an InputError naming the variable."""
    names = [n.strip() for n in env.get(PREFIX + "STAGES", ",".join(STAGE_NAMES)).split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown or not names:
        raise InputError(f"{PREFIX}STAGES: {', '.join(unknown) or 'empty'}: choose from {','.join(STAGE_NAMES)}")
    users = _number(env, "USERS", 8, int, 1)
    steps_text = env.get(PREFIX + "RAMP_STEPS", "").strip()
    try:
        steps = ramp_users(users, [int(s) for s in steps_text.split(",") if s.strip()])
    except ValueError:
        raise InputError(f"{PREFIX}RAMP_STEPS={steps_text!r}: give user counts such as 1,2,4,8") from None
    if not steps:
        raise InputError(f"{PREFIX}RAMP_STEPS={steps_text!r}: give user counts ≥ 1 such as 1,2,4,8")
    soak_users = _number(env, "SOAK_USERS", max(1, users // 2), int, 1)
    mixed_users = _number(env, "MIXED_USERS", soak_users, int, 1)
    mix = tuple(parse_mix(env.get(PREFIX + "MIX", DEFAULT_MIX), PREFIX + "MIX").items())
    soak_mix = tuple(parse_mix(env.get(PREFIX + "SOAK_MIX", DEFAULT_SOAK_MIX), PREFIX + "SOAK_MIX").items())
    plan: list[Stage] = []
    for name in names:
        if name == "baseline":
            plan.append(Stage("baseline", name, 1, _number(env, "BASELINE_S", 30.0, float, 0.1),
                              _number(env, "BASELINE_REQUESTS", 0, int), (("vectors_short", 1.0),)))
        elif name == "ramp":
            step_s, cap = _number(env, "STEP_S", 15.0, float, 0.1), _number(env, "STEP_REQUESTS", 0, int)
            plan += [Stage(f"ramp-{n}", name, n, step_s, cap, (("vectors", 1.0),)) for n in steps]
        elif name == "soak":
            plan.append(Stage("soak", name, soak_users, _number(env, "SOAK_S", 60.0, float, 0.1),
                              _number(env, "SOAK_REQUESTS", 0, int), soak_mix))
        else:
            plan.append(Stage("mixed", name, mixed_users, _number(env, "MIXED_S", 30.0, float, 0.1),
                              _number(env, "MIXED_REQUESTS", 0, int), mix))
    return plan


def request_name(label: str, kind: str, category: str) -> str:
    return f"{label} {kind}" + {"ok": "", "busy": BUSY_SUFFIX, "error": ERROR_SUFFIX}[category]


def busy_message(status: int, retry_after: str | None) -> str:
    hint = f"Retry-After {retry_after}" if retry_after is not None else "no Retry-After"
    return f"HTTP {status} ({hint})"


# ---- the subprocess ---------------------------------------------------------------------------------------------
@dataclass
class LocustRun:
    stats: dict[str, dict[str, Any]]  # request name → locust's statistics entry (its --json-file)
    failures: list[tuple[str, str, int]]  # (request name, error, occurrences), from its failures CSV
    timeline: list[dict[str, Any]]  # per stage: label, users, start, end (epoch seconds), ended (time | cap)
    records: list[dict[str, Any]]  # the locustfile's per-request engine times and error samples
    log: str


def locust_version() -> str:
    """The installed locust's version, read from its metadata (importing it would patch this process)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("locust")
    except PackageNotFoundError:
        raise InputError("locust is not installed: pip install -r requirements.txt") from None


def locust_command(url: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
            "--csv", str(out / "locust"), "--json-file", str(out / "locust"), "--only-summary",
            "--exit-code-on-error", "0", "--loglevel", "WARNING"]


def run_locust(url: str, plan_env: Mapping[str, str], auth: tuple[str, str] | None, out: Path,
               timeout_s: float, allow_remote: bool = False) -> LocustRun:
    """Run the locustfile headless with `plan_env` in a child process; its statistics, read back. Credentials go in
    the child's environment (WENMO_AUTH), never on its command line."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX) and k != "WENMO_AUTH"}
    env.update(plan_env)
    env[PREFIX + "OUT"] = str(out)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LOCUSTFILE.parents[1]), env.get("PYTHONPATH", "")]))
    if auth is not None:
        env["WENMO_AUTH"] = f"{auth[0]}:{auth[1]}"
    if allow_remote:
        env[PREFIX + "ALLOW_REMOTE"] = "1"
    try:
        proc = subprocess.run(locust_command(url, out), env=env, cwd=LOCUSTFILE.parents[1], capture_output=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InputError(f"locust did not finish within {timeout_s:g} s (see {out})") from None
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    (out / "locust.log").write_text(log, encoding="utf-8")
    if proc.returncode != 0:
        raise InputError(f"locust exited with status {proc.returncode}: {last_lines(log)}")
    return read_run(out, log)


def last_lines(log: str, n: int = 8) -> str:
    lines = [x for x in log.strip().splitlines() if x.strip()]
    return "\n".join(lines[-n:]) or "(no output)"


def read_run(out: Path, log: str = "") -> LocustRun:
    entries = json.loads((out / "locust.json").read_text(encoding="utf-8"))
    stats = {e["name"]: e for e in entries}
    failures = []
    with (out / "locust_failures.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            failures.append((row["Name"], row["Error"], int(row["Occurrences"])))
    timeline_path = out / "stages.json"
    timeline = json.loads(timeline_path.read_text(encoding="utf-8")) if timeline_path.exists() else []
    records = []
    for path in sorted(out.glob("records-*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return LocustRun(stats, failures, timeline, records, log)


# ---- statistics → the loadtest report ---------------------------------------------------------------------------
def histogram_percentile(hist: Mapping[int, int], count: int, percent: float) -> float | None:
    """Locust's own percentile (locust.stats.calculate_response_time_percentile) over its rounded response times
    (2 significant digits from 100 ms up), so the figures equal those its UI and CSV show."""
    if count <= 0:
        return None
    wanted = int(count * percent)
    seen = 0
    for ms in sorted(hist, reverse=True):
        seen += hist[ms]
        if count - seen <= wanted:
            return float(ms)
    return None


def _merge(entries: Sequence[dict[str, Any]]) -> tuple[dict[int, int], int]:
    hist: dict[int, int] = {}
    for e in entries:
        for ms, n in e["response_times"].items():
            hist[int(float(ms))] = hist.get(int(float(ms)), 0) + n
    return hist, sum(e["num_requests"] for e in entries)


def summary(run: LocustRun, stage: dict[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    """The shape of bench.loadtest.summarize for `kinds` of one stage, from locust's statistics."""
    label = stage["label"]
    ok_rows = [run.stats[n] for n in (request_name(label, k, "ok") for k in kinds) if n in run.stats]
    busy_names = {request_name(label, k, "busy") for k in kinds}
    error_names = {request_name(label, k, "error") for k in kinds}
    hist, ok = _merge(ok_rows)
    busy = sum(run.stats[n]["num_requests"] for n in busy_names if n in run.stats)
    errors = sum(run.stats[n]["num_requests"] for n in error_names if n in run.stats)
    reasons: dict[str, int] = {}
    busy_statuses: dict[str, int] = {}
    with_retry_after = 0
    for name, error, n in run.failures:
        if name in error_names:
            reasons[error] = reasons.get(error, 0) + n
        elif name in busy_names:
            status = error.split()[1] if error.startswith("HTTP ") else error
            busy_statuses[status] = busy_statuses.get(status, 0) + n
            with_retry_after += n if "(Retry-After" in error else 0
    every = [run.stats[n] for n in busy_names | error_names if n in run.stats] + ok_rows
    last = max((e["last_request_timestamp"] for e in every if e["last_request_timestamp"]), default=None)
    # A stage that reached its request cap ended with its last answer; one that ran its time, at its end or
    # when the requests in flight then came back, whichever is later (as the httpx client's stages do).
    end = last if stage["ended"] == "cap" and last is not None else max(stage["end"], last or 0)
    elapsed = max(end - stage["start"], 1e-9)
    total = ok + busy + errors
    return {
        "users": stage["users"], "requests": total, "ok": ok, "busy": busy, "errors": errors, "elapsed_s": elapsed,
        "throughput_rps": ok / elapsed, "attempted_rps": total / elapsed,
        "latency_p50_ms": histogram_percentile(hist, ok, 0.50),
        "latency_p95_ms": histogram_percentile(hist, ok, 0.95),
        "latency_p99_ms": histogram_percentile(hist, ok, 0.99),
        "latency_max_ms": max((e["max_response_time"] for e in ok_rows if e["num_requests"]), default=None),
        "error_reasons": reasons, "busy_statuses": busy_statuses, "busy_with_retry_after": with_retry_after,
    }


def overhead(run: LocustRun, label: str = "baseline") -> dict[str, Any]:
    """Server overhead over the stage's answered requests that carried X-Wenmo-Engine-Ms: HTTP p50 − engine p50,
    both from the locustfile's per-request records (locust's own figures are rounded to whole milliseconds)."""
    pairs = [Outcome(r["kind"], "ok", 200, r["http_ms"] / 1000, 0.0, r["engine_ms"]) for r in run.records
             if r.get("type") == "engine" and r["stage"] == label]
    out = server_overhead(pairs)
    ok = run.stats.get(request_name(label, "vectors_short", "ok"))
    if ok and ok["num_requests"]:
        out["locust_p50_ms"] = histogram_percentile(_merge([ok])[0], ok["num_requests"], 0.5)
    return out


def error_samples(run: LocustRun) -> list[str]:
    counts: dict[str, int] = {}
    for r in run.records:
        if r.get("type") == "sample":
            counts[r["text"]] = counts.get(r["text"], 0) + 1
    return [f"{n}× {s}" for s, n in counts.items()]


def stage_entry(run: LocustRun, label: str) -> dict[str, Any]:
    for s in run.timeline:
        if s["label"] == label:
            return s
    raise InputError(f"locust's run has no stage {label!r} (see its log: {last_lines(run.log, 4)})")


def stage_seconds(plan: Sequence[Stage]) -> float:
    return sum(s.seconds for s in plan)


def plan_env(**values: Any) -> dict[str, str]:  # noqa: ANN401
    """WENMO_LOCUST_* variables from keyword arguments: plan_env(stages="ramp", step_s=5) → {WENMO_LOCUST_STAGES…}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        out[PREFIX + key.upper()] = str(value)
    return out


def write_timeline(out: Path, timeline: list[dict[str, Any]]) -> None:
    tmp = out / "stages.json.tmp"
    tmp.write_text(json.dumps(timeline), encoding="utf-8")
    tmp.replace(out / "stages.json")

