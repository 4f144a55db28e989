"""`python -m app soak`: a server this command starts itself, soaked with every route, judged on its memory rate,
and — with `--trace-heap` — what the memory that grew was, by allocation site.

    python -m app soak --demo --soak-s 900 --json measurements/soak.json --plot measurements/soak.png

1. Starts `python -m app serve` (`--demo`: the tiny offline models; else the configured ones, on the configured
   device) on a free loopback port with fresh credentials and `--trusted-proxies 127.0.0.1`, so the wrong logins
   of the mix arrive from many client addresses (198.18.0.0/15) instead of locking out this one.
2. Runs `loadtest`'s soak stage against it: `--soak-users` closed-loop users for `--soak-s` seconds with
   `--soak-mix` (every kind by default: vectors, similarity, rerank, NLU, the UI's queue path, /metrics, wrong
   logins), GET /metrics every `--metrics-interval-s` for the memory gauges (resident memory; GPU memory via
   NVML where there is a GPU).
3. The verdict (bench/prometheus.py `memory_verdict`): each gauge's slope in MiB per 1,000 requests over the
   settled samples (every `--settle-every-s` the users pause; with nothing in flight for `--settle-s`, GET
   /metrics) after the warm-up, extrapolated to 24 hours at the soak's rate under load, against
   `--memory-budget-mib-per-day`.
4. `--trace-heap`: the server traces Python allocations (WENMO_HEAP_SNAPSHOT_DIR, app/heapsnapshots.py; several
   times slower) and writes a snapshot at the end of the warm-up and one at the end; the report lists the
   allocation sites whose live memory grew most between them, and the traced growth per 1,000 requests. Memory
   the tracer cannot see (C allocations, allocator fragmentation) is the resident slope minus that.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ModelUnavailableError
from app.heapsnapshots import diff_by_site, traced_bytes
from bench.loadtest import DEFAULT_SOAK_MIX, MEMORY_BUDGET_MIB_PER_DAY, LoadOptions, LoadTester, wait_ready
from bench.serverchild import ServerChild, free_port, serve_env

SCHEMA = "wenmo-soak/1"
USER = "wenmo-soak"
SOAK_MIX = DEFAULT_SOAK_MIX + ",badlogin=1"
SNAPSHOT_WAIT_S = 300.0  # a snapshot of a large traced heap takes a while to write
Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class SoakOptions:
    demo: bool = False
    users: int = 8
    soak_s: float = 600.0
    soak_requests: int = 10**9
    soak_mix: str = SOAK_MIX
    soak_warmup_s: float = 60.0
    memory_budget_mib_per_day: float = MEMORY_BUDGET_MIB_PER_DAY
    metrics_interval_s: float = 5.0
    settle_every_s: float = 60.0
    settle_s: float = 3.0
    trace_heap: bool = False
    top_sites: int = 15
    ready_timeout_s: float = 600.0
    request_timeout_s: float = 120.0
    keep_work_dir: bool = False
    command: list[str] = field(default_factory=list)


def child_env(base: Mapping[str, str], settings_env: Mapping[str, str], *, port: int, password: str,
              heap_dir: Path | None) -> dict[str, str]:
    """The server child's environment: the caller's, the settings given to this command as flags, then what the
    soak decides (loopback port, its own credentials, this client trusted as a proxy, heap snapshots)."""
    own = {"WENMO_HOST": "127.0.0.1", "WENMO_PORT": str(port), "WENMO_AUTH": f"{USER}:{password}",
           "WENMO_AUTH_FILE": "", "WENMO_TRUSTED_PROXIES": "127.0.0.1"}
    if heap_dir is not None:
        own["WENMO_HEAP_SNAPSHOT_DIR"] = str(heap_dir)
    return serve_env({k: v for k, v in base.items() if k != "WENMO_HEAP_SNAPSHOT_DIR"}, settings_env, own)


class HeapProbe:
    """Asks the traced server for snapshots (SIGUSR1) and waits, bounded, for each file to appear whole."""

    def __init__(self, server: ServerChild, directory: Path) -> None:
        self.server = server
        self.directory = directory
        self.taken: list[tuple[Path, float]] = []  # (file, when asked, monotonic)

    def take(self) -> Path:
        before = set(self.directory.glob("*.tracemalloc"))
        asked = time.monotonic()
        self.server.signal(signal.SIGUSR1)
        while time.monotonic() - asked < SNAPSHOT_WAIT_S:
            new = set(self.directory.glob("*.tracemalloc")) - before
            if new:
                path = new.pop()
                self.taken.append((path, asked))
                return path
            why = self.server.gone()
            if why:
                raise ModelUnavailableError(why)
            time.sleep(0.2)
        raise ModelUnavailableError(f"the server wrote no heap snapshot within {SNAPSHOT_WAIT_S:g} s of SIGUSR1; "
                                    f"its log: {self.server.log_path}")


def heap_report(first: Path, last: Path, requests_between: int, top: int) -> dict[str, Any]:
    a, b = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    before, after = traced_bytes(a), traced_bytes(b)
    grown = diff_by_site(a, b, top=top)
    per_1k = (after - before) / 2**20 / requests_between * 1000 if requests_between else None
    return {"traced_mib_before": before / 2**20, "traced_mib_after": after / 2**20,
            "requests_between": requests_between, "traced_mib_per_1k_requests": per_1k,
            "grown_sites": grown}


def machine() -> dict[str, Any]:
    import platform

    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def run(opts: SoakOptions, settings_env: Mapping[str, str], base_env: Mapping[str, str] | None = None,
        progress: Progress = _stderr) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="wenmo-soak-"))
    heap_dir = work / "heap" if opts.trace_heap else None
    port, password = free_port(), secrets.token_urlsafe(18)
    env = child_env(dict(os.environ if base_env is None else base_env), settings_env, port=port, password=password,
                    heap_dir=heap_dir)
    url = f"http://127.0.0.1:{port}"
    lopts = LoadOptions(url=url, stages=("soak",), soak_users=opts.users, soak_s=opts.soak_s,
                        soak_requests=opts.soak_requests, soak_mix=opts.soak_mix, soak_warmup_s=opts.soak_warmup_s,
                        memory_budget_mib_per_day=opts.memory_budget_mib_per_day,
                        metrics_interval_s=opts.metrics_interval_s, settle_every_s=opts.settle_every_s,
                        settle_s=opts.settle_s, request_timeout_s=opts.request_timeout_s,
                        ready_timeout_s=opts.ready_timeout_s, command=opts.command)
    tester = LoadTester(lopts, (USER, password))
    report: dict[str, Any] = {
        "schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": opts.command, "models": "demo (tiny, offline)" if opts.demo else "the configured models",
        "machine": machine(), "options": {k: v for k, v in asdict(opts).items() if k != "command"},
        "settings_given": dict(settings_env), "work_dir": str(work),
    }
    server = ServerChild("the soak's settings", env, work / "serve.log", ("--demo",) if opts.demo else ())
    tester.gone = server.gone
    probe = HeapProbe(server, heap_dir) if heap_dir is not None else None
    marks: dict[str, int] = {}
    try:
        async def soak() -> dict[str, Any]:
            async with tester.client(opts.users + 2) as client:
                progress(f"soak: starting the server ({'demo models' if opts.demo else 'configured models'}), "
                         f"log {work / 'serve.log'}")
                await wait_ready(client, url, opts.ready_timeout_s, gone=server.gone)
                progress(f"soak: {opts.users} users for {opts.soak_s:g} s, mix {opts.soak_mix}"
                         + ("; tracing the heap (slower)" if probe else ""))

                def warm(answered: int) -> None:
                    if probe is not None:
                        marks["warm"] = answered
                        probe.take()
                return await tester.soak(client, opts.users, on_warm=warm if probe else None)

        stage = asyncio.run(soak())
        report["soak"] = stage
        if probe is not None and probe.taken:
            last = probe.take()
            report["heap"] = heap_report(probe.taken[0][0], last, stage["requests"] - marks.get("warm", 0),
                                         opts.top_sites)
        report["server_log_tail"] = server.log_tail(20)
    finally:
        report["server_exit"] = server.stop()
        if not opts.keep_work_dir and heap_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report["error_samples"] = [f"{n}× {s}" for s, n in tester.error_samples.items()]
    report["failures"] = failures(report["soak"]["error_reasons"])
    report["server_gone"] = tester.stopped  # the soak stopped early: its server exited under it
    report["pass"] = bool(report["soak"]["verdict"]["pass"]) and report["failures"] == 0 and tester.stopped is None
    return report


def failures(error_reasons: Mapping[str, int]) -> int:
    """Errors that fail the soak: all but the server's own refusals (HTTP 4xx, e.g. a request past the NLU
    budget, which the tiny random demo model reaches on nested schemas), which are counted and shown."""
    return sum(n for reason, n in error_reasons.items() if not reason.startswith("HTTP 4"))
