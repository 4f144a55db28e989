"""`python -m app serve`: the UI and the HTTP API on one uvicorn server, with auth, one concurrency cap,
readiness and a graceful drain.

Start-up, in order (the cheap checks first, so a mistake fails in a second, not after a model download):

1. refuse `--no-auth` unless bound to a loopback address; read or generate the credentials;
2. resolve the runtime plan (device → the default concurrency cap); bind the port;
3. build the app — FastAPI routes (app/web/api.py) with the Gradio Blocks mounted at `/` — behind, from the
   outside in: metrics → basic auth → lifecycle gate (503 while loading/draining, body cap);
4. serve at once (`/healthz` 200, `/readyz` 503) while a thread loads every model; when all are loaded
   `/readyz` turns 200. A model that cannot load stops the server: the error goes to the CLI's boundary
   (app/cli.py `report_error`), which prints its message and exits with its class's status (2 for a model).

SIGTERM/SIGINT: stop taking work, let in-flight requests finish for up to --drain-s, exit 0; a second
signal exits at once. We run uvicorn ourselves because Gradio's own server dies on SIGTERM mid-request.

Importing this module loads no uvicorn, FastAPI or Gradio (the CLI imports it for `serve` and must answer `--help`
without them): those load inside `serve` and `build_asgi`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from app import hostinfo
from app.allocator import malloc_stats
from app.composition import build_service, demo_models, make_plan
from app.config import Settings, in_kubernetes
from app.engine.limiter import ConcurrencyLimiter
from app.errors import ConfigError, ModelUnavailableError, WenmoError
from app.heapsnapshots import HeapSnapshots
from app.service import ROLES
from app.tune.jobs import TuneJobs
from app.web import queuesessions
from app.web.auth import (
    Authenticator,
    BasicAuthMiddleware,
    FailureLimiter,
    is_loopback,
    load_credentials,
    parse_trusted_proxies,
)
from app.web.context import ServerContext
from app.web.history import History, HistorySampler
from app.web.lifecycle import Lifecycle, LifecycleGate, Phase
from app.web.metrics import MetricsMiddleware
from app.web.ui.filestore import FileStore, UploadStoreGate

log = logging.getLogger(__name__)

EXIT_OK = 0  # stopped on request (an error's status is its class's, app/errors.py)
GPU_CONCURRENCY = 2
BATCHED_ADMISSION = 32
SHUTDOWN_GRACE_S = 2  # after the drain: time for idle streams (heartbeats) to close before they are cut
# An idle keep-alive connection is closed by the server after this long. The side that closes an idle connection must
# be the one that does not reuse it, or a request sent at the moment the other closes it is lost: with uvicorn's 5 s,
# the same as httpx's pool expiry, soaks saw a ReadError or two per 100k requests (each after a settling pause),
# and a reverse proxy keeping idle upstream connections for 60 s (nginx's keepalive_timeout, a cloud load
# balancer's idle timeout) would reuse ones the server has closed and answer 502. Longer than those, the proxy or
# client closes first. Idle connections cost a socket each; connections that never send a request are not timed
# by this either way.
KEEP_ALIVE_S = 75


def default_concurrency(settings: Settings, on_cuda: bool) -> int:
    """Settings.max_concurrent, or the default. With batching across requests, a request admitted to the engine
    queues its items and shares forwards with the others, so many may be in at once: BATCHED_ADMISSION (under
    anyio's 40 worker threads, which run the surfaces' blocking calls). Without it each admitted request runs its
    own forwards: 2 on a GPU (overlaps host work with kernels), one per two CPU cores on a CPU (each forward
    already uses several threads)."""
    if settings.max_concurrent > 0:
        return settings.max_concurrent
    if settings.batch_across_requests == "on":
        return BATCHED_ADMISSION
    return GPU_CONCURRENCY if on_cuda else max(1, (os.cpu_count() or 1) // 2)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio turns on TCP_NODELAY for accepted connections only then, and without
    # it a keep-alive reply's body waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port / WENMO_PORT, "
                          "or stop what is using it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_asgi(ctx: ServerContext, authenticator: Any) -> tuple[Any, Any, Any]:
    """(the ASGI app with every layer, the Blocks, the file store)."""
    # Uploads and exports live in a folder of this process's own (0700), bounded on disk; Gradio reads
    # GRADIO_TEMP_DIR when it loads and when the Blocks are built, so it is set first.
    store = FileStore(ctx.settings.max_file_store_mib * 2**20, max_files_per_upload=ctx.settings.max_upload_files,
                      max_age_s=ctx.settings.max_file_store_age_s)
    os.environ["GRADIO_TEMP_DIR"] = str(store.root)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a private server
    # Gradio's queue records every event for its /monitoring dashboard (not served here) and after each event
    # summarises all records, up to 10,000, with pandas: memory kept and CPU per event that grew with every
    # call. One record, never summarised.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**9))
    import gradio as gr
    from fastapi import FastAPI

    # deferred: these pull fastapi and gradio, which only a running server needs (and gradio must see
    # GRADIO_TEMP_DIR, set just above)
    from app.web.api import create_router, install_error_handlers
    from app.web.ui.blocks import CSS, build_blocks, forget_files

    s = ctx.settings
    api = FastAPI(title="Wenmo", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    install_error_handlers(api, ctx)
    api.include_router(create_router(ctx))
    blocks = build_blocks(ctx, store)
    store.on_removed.append(lambda paths: forget_files(blocks, paths))
    api.add_middleware(UploadStoreGate, store=store, max_request_bytes=ctx.max_upload_bytes)
    # Gradio's queue only bounds its own backlog; the service's limiter is the one cap (shared with the HTTP
    # routes), so events are not limited here and busy answers carry the limiter's message. api_open=False:
    # direct POSTs to queued endpoints would skip the queue.
    backlog = 4 * (ctx.limiter.max_concurrent + ctx.limiter.max_queue) + 16
    # Gradio keeps a copy of the page's state per session (~100 KB here) and every /gradio_api/call opens a
    # new session: at its default of 10,000 sessions that is ~1 GB kept, growing with every call until then.
    # Our page keeps no gr.State, so a forgotten session costs nothing: the browser sends every input again.
    blocks.state_session_capacity = s.ui_sessions
    blocks.queue(api_open=False, max_size=backlog, default_concurrency_limit=None)
    # The queue's message channel per session is kept for the last 2,000 sessions (~1.5 KB each): bounded like
    # the sessions' state, but never below the backlog, so a queued event's channel cannot be forgotten.
    blocks._queue.pending_messages_per_session.max_size = max(s.ui_sessions, backlog)
    # Its record of the events each session waits for kept an empty set per UI call, for ever (queuesessions.py).
    if queuesessions.install(blocks._queue) is None:
        log.warning("event=gradio_pending_sessions_unbounded (this Gradio's queue has no pending_event_ids_session "
                    "dict: its per-session records are left as Gradio keeps them)")
    gr.mount_gradio_app(
        api, blocks, path="/", server_name=s.host, server_port=s.port,
        max_file_size=f"{s.max_upload_mib}mb", ssr_mode=False, run_history=False, show_error=True,
        footer_links=["api", "settings"], css=CSS, mcp_server=False,
    )
    ctx.gradio_queue = lambda: gradio_queue_counts(blocks)
    app: Any = LifecycleGate(api, ctx.lifecycle, max_body_bytes=ctx.max_upload_bytes,
                             max_upload_files=s.max_upload_files)
    if authenticator is not None:
        app = BasicAuthMiddleware(app, authenticator)
    app = MetricsMiddleware(app, ctx.metrics)
    return app, blocks, store


def gradio_queue_counts(blocks: Any) -> tuple[int, int]:
    """(waiting, running) events in Gradio's queue; (0, 0) if its internals ever change shape."""
    q = getattr(blocks, "_queue", None)
    try:
        waiting = len(q) if q is not None else 0
        running = sum(1 for job in (getattr(q, "active_jobs", None) or []) if job)
    except Exception:
        return 0, 0
    return waiting, running


class ServerStateCollector:
    """/metrics families read at each scrape from state the server owns elsewhere: the lifecycle, the limiter,
    the engine's queues, Gradio's queue, model and process memory."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        g_wait, _running = ctx.gradio_queue()
        try:
            queues = ctx.service.engine_queues()
        except ModelUnavailableError:  # still loading: no queues yet
            queues = {}
        yield gauge("wenmo_ready", "1 when every model is loaded and the server takes work",
                    ctx.lifecycle.phase is Phase.READY)
        yield gauge("wenmo_draining", "1 while draining after SIGTERM", ctx.lifecycle.phase is Phase.DRAINING)
        yield gauge("wenmo_in_flight", "inferences running now (under the concurrency cap)", ctx.limiter.running)
        yield gauge("wenmo_queue_depth", "requests waiting for an inference slot (plus Gradio's own queue)",
                    ctx.limiter.waiting + g_wait)
        yield gauge("wenmo_max_concurrent", "the concurrency cap", ctx.limiter.max_concurrent)
        yield gauge("wenmo_max_queue", "the wait-queue bound", ctx.limiter.max_queue)
        yield CounterMetricFamily("wenmo_limiter_rejected_total", "requests the limiter answered busy",
                                  ctx.limiter.rejected)
        yield per_role(CounterMetricFamily, "wenmo_engine_forwards_total",
                       "forward passes the engine's queue ran, per model role",
                       {r: q.forwards for r, q in queues.items()})
        yield per_role(CounterMetricFamily, "wenmo_engine_items_total",
                       "texts, pairs or NLU windows those forwards held, per model role",
                       {r: q.items for r, q in queues.items()})
        yield per_role(CounterMetricFamily, "wenmo_engine_shared_forwards_total",
                       "forwards that held the work of more than one request (batching across requests), per "
                       "model role", {r: q.shared_forwards for r, q in queues.items()})
        yield per_role(GaugeMetricFamily, "wenmo_engine_padded_lengths",
                       "distinct lengths the role's forwards were padded to so far: the input shapes the libraries "
                       "under torch keep state for (at most 20 up to 512 tokens with --length-buckets on)",
                       {r: q.padded_lengths for r, q in queues.items()})
        yield per_role(GaugeMetricFamily, "wenmo_engine_waiting_requests",
                       "requests with work in the engine's queue, per model role",
                       {r: q.waiting for r, q in queues.items()})
        info = GaugeMetricFamily("wenmo_model_info", "the checkpoint that serves each model role (value 1)",
                                 labels=("role", "checkpoint", "path"))
        if ctx.lifecycle.loaded:
            for s in ctx.service.serving():
                info.add_metric((s.role, s.name, s.path), 1)
        yield info
        yield per_role(GaugeMetricFamily, "wenmo_model_memory_bytes", "bytes of weights and buffers per loaded model",
                       ctx.model_bytes)
        # The same reading as prometheus_client's process_resident_memory_bytes, under the name the soak's
        # published figures and dashboards use.
        yield gauge("wenmo_process_resident_memory_bytes", "resident memory of the server process",
                    int(hostinfo.host()["process_rss_mib"] * 2**20))
        # Where the resident memory is, for telling a leak from fragmentation (issue 18's soak reads these).
        heap = malloc_stats()
        if heap is not None:
            parts = GaugeMetricFamily("wenmo_heap_bytes", "the C heap (glibc, every arena): in_use = chunks held, "
                                      "free = chunks kept for reuse (fragmentation), system = taken from the system",
                                      labels=("part",))
            for part, n in heap.items():
                parts.add_metric((part,), n)
            yield parts
        yield gauge("wenmo_python_allocated_blocks", "Python objects' memory blocks in use (sys.getallocatedblocks)",
                    sys.getallocatedblocks())
        status = hostinfo.process_status()
        if status is not None:
            # Resident memory by kind: a step in `file` is code or a file mapped in (bounded by what is on disk), one
            # in `anon` outside the C heap is Python's arenas, thread stacks or a library's own mmaps.
            kinds = GaugeMetricFamily("wenmo_resident_bytes", "resident memory of the server process by kind (Linux "
                                      "/proc/self/status): anon = heaps, arenas, stacks; file = mapped code and files",
                                      labels=("kind",))
            for kind in ("anon", "file", "shmem"):
                kinds.add_metric((kind,), status[kind])
            yield kinds
            yield gauge("wenmo_threads", "OS threads of the server process (each keeps a stack resident)",
                        status["threads"])
        cuda = hostinfo.cuda_allocated_bytes()
        if cuda is not None:
            yield gauge("wenmo_cuda_allocated_bytes", "bytes held by torch's CUDA allocator", cuda)
        gpu = hostinfo.gpus()
        if gpu:
            used = GaugeMetricFamily("wenmo_gpu_memory_used_bytes", "device memory used (NVML, all processes)",
                                     labels=("gpu",))
            for g in gpu:
                used.add_metric((str(g["index"]),), int(g.get("mem_used_mib", 0) * 2**20))
            yield used
            own = hostinfo.process_gpu_bytes(os.getpid())
            if own is None and cuda is None:
                own = 0  # CUDA not started here: this process holds none of the card, whatever else runs on it
            if own is not None:
                yield gauge("wenmo_gpu_process_memory_bytes", "device memory this server process holds (NVML, per "
                            "process, all GPUs; absent where NVML cannot attribute it, e.g. a container)", own)


def gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, float(value))


def per_role(family: type[CounterMetricFamily | GaugeMetricFamily], name: str, help_: str,
             by_role: dict[str, float]) -> Metric:
    out = family(name, help_, labels=("role",))
    for role, value in sorted(by_role.items()):
        out.add_metric((role,), value)
    return out


class DrainingServer:
    """uvicorn.Server whose SIGTERM/SIGINT start a drain instead of an immediate shutdown."""

    def __init__(self, config: Any, lifecycle: Lifecycle, drain_s: float) -> None:
        import uvicorn

        outer = self

        class _Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                outer.loop = asyncio.get_running_loop()
                await super().startup(sockets=sockets)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                # Not recorded for re-raising (uvicorn would re-send SIGTERM to itself at the end and the
                # process would die by the signal instead of exiting 0 after the drain).
                outer.on_signal(sig)

        self.server = _Server(config)
        self.lifecycle = lifecycle
        self.drain_s = drain_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.still_running = 0
        self._draining = False

    def on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._draining or self.loop is None:
            log.warning("event=signal signal=%s action=exit_now", name)
            self.server.should_exit = True
            self.server.force_exit = True
            return
        self._draining = True
        log.info("event=signal signal=%s action=drain drain_s=%g", name, self.drain_s)
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._drain()))

    async def _drain(self) -> None:
        self.still_running = await self.lifecycle.drain(self.drain_s)
        self.server.should_exit = True

    def stop_soon(self) -> None:
        """From any thread: shut down without draining (the start failed)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(setattr, self.server, "should_exit", True)
        else:
            self.server.should_exit = True

    def run(self, sock: socket.socket) -> None:
        self.server.run(sockets=[sock])


def load_models(ctx: ServerContext, demo: bool, on_done: Any) -> None:
    """Runs in a thread: build the service with every role, then mark the server ready; on a failure,
    `on_done(exception)`, which `serve` raises once the server has stopped."""
    try:
        demo_dirs = demo_models(ctx.state_dir) if demo else None
        roles = list(ROLES)  # a server loads every model
        ctx.roles = tuple(roles)
        service = build_service(ctx.settings, roles, limiter=ctx.limiter, demo_dirs=demo_dirs, plan=ctx.plan,
                                request_timeout_s=ctx.settings.request_timeout_s)
        ctx.model_bytes = service.weigh_models(hostinfo.module_bytes)
        ctx.lifecycle.set_ready(service)
    except WenmoError as e:
        ctx.lifecycle.set_failed(e.message)
        on_done(e)
    except Exception as e:  # a bug, not a configuration problem: keep the traceback in the log
        log.exception("event=load_failed")
        ctx.lifecycle.set_failed(f"model loading failed: {type(e).__name__}: {e}")
        on_done(e)


def serve(settings: Settings, *, demo: bool = False, no_auth: bool = False) -> int:
    # Files this process writes (uploads, exports, Gradio's copies, generated credentials) are its own:
    # 0600 files in 0700 folders, whatever the login shell's umask.
    os.umask(0o077)
    state_dir = Path(settings.state_dir).expanduser()
    if no_auth:
        if not is_loopback(settings.host):
            raise ConfigError(f"--no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost), not "
                              f"--host {settings.host}; set WENMO_AUTH=user:password (or WENMO_AUTH_FILE) instead")
        authenticator = None
        log.warning("event=auth_disabled host=%s (--no-auth; loopback only)", settings.host)
    else:
        credentials, origin = load_credentials(settings.auth, settings.auth_file, state_dir,
                                               may_generate=not in_kubernetes())
        authenticator = Authenticator(credentials, FailureLimiter.from_settings(settings),
                                      max_checks=settings.auth_max_checks)
        log.info("event=auth users=%d from=%r lockout_after=%d lockout_s=%g max_checks=%d", len(credentials), origin,
                 settings.auth_max_failures, settings.auth_lockout_s, settings.auth_max_checks)
    # Whose X-Forwarded-For names the client (the lockout's key): only the operator's proxies, never uvicorn's
    # default (loopback, or FORWARDED_ALLOW_IPS), which lets any local process pick its own address.
    trusted_proxies = parse_trusted_proxies(settings.trusted_proxies)
    log.info("event=trusted_proxies proxies=%s", ",".join(trusted_proxies) or "none")
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        log.warning("event=forwarded_allow_ips_ignored (uvicorn's variable has no effect here; set "
                    "--trusted-proxies / WENMO_TRUSTED_PROXIES)")

    plan = make_plan(settings)
    limiter = ConcurrencyLimiter(default_concurrency(settings, plan.is_cuda), settings.max_queue)
    log.info("event=limits max_concurrent=%d max_queue=%d max_texts=%d max_chars=%d max_upload_mib=%d",
             limiter.max_concurrent, limiter.max_queue, settings.max_texts, settings.max_chars,
             settings.max_upload_mib)
    sock = bind_socket(settings.host, settings.port)

    import uvicorn

    lifecycle = Lifecycle()
    if settings.heap_snapshot_dir:
        snapshots = HeapSnapshots(settings.heap_snapshot_dir)
        snapshots.answer_signal()  # here: a signal handler is set from the main thread
        lifecycle.on_ready.append(snapshots.start_tracing)
    ctx = ServerContext(settings=settings, lifecycle=lifecycle, limiter=limiter, demo=demo, state_dir=state_dir,
                        plan=plan)
    ctx.metrics.add_collector(ServerStateCollector(ctx))
    ctx.history = History(ctx.metrics)
    sampler = HistorySampler(ctx.history)
    ctx.tune_jobs = TuneJobs(settings)  # the Tune tab's jobs: a child process each, one at a time
    asgi, _blocks, store = build_asgi(ctx, authenticator)
    lifecycle.work_probes += [lambda: sum(ctx.gradio_queue()), lambda: limiter.running + limiter.waiting]

    config = uvicorn.Config(asgi, log_config=None, access_log=settings.log_level == "DEBUG", lifespan="on",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, timeout_keep_alive=KEEP_ALIVE_S,
                            proxy_headers=bool(trusted_proxies), forwarded_allow_ips=trusted_proxies)
    server = DrainingServer(config, lifecycle, settings.drain_s)
    failure: list[Exception] = []

    def failed(error: Exception) -> None:
        failure.append(error)
        server.stop_soon()

    loader = threading.Thread(target=load_models, args=(ctx, demo, failed), name="model-loader", daemon=True)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("event=listening url=http://%s:%d demo=%s (loading models; /readyz turns 200 when done)",
             shown, settings.port, demo)
    loader.start()
    sampler.start()  # from the start: the memory of loading is part of the picture
    try:
        server.run(sock)
    finally:
        sampler.stop()
        ctx.tune_jobs.close()  # a job left running would outlive the server (its own process group)
        store.remove()
    if failure:
        raise failure[0]  # rendered by the CLI's one error boundary: message and exit status
    log.info("event=stopped still_running=%d", server.still_running)
    if server.still_running or loader.is_alive():
        # Worker threads still inside a forward pass (drain deadline passed) or a load in progress would
        # hold the interpreter open at exit; the process must end now, as promised to the supervisor.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK
