"""What the web surfaces (UI and HTTP API) share in one server process: settings, the lifecycle (and through
it the service), the limiter, metrics and a few facts about the start. Built by app/web/server.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import hostinfo
from app.config import Settings
from app.engine.limiter import ConcurrencyLimiter
from app.engine.runtime import RuntimePlan
from app.service import Service, ServingCheckpoint
from app.web.history import History
from app.web.lifecycle import Lifecycle
from app.web.metrics import Metrics


@dataclass
class ServerContext:
    settings: Settings
    lifecycle: Lifecycle
    limiter: ConcurrencyLimiter
    metrics: Metrics = field(default_factory=Metrics)
    demo: bool = False
    state_dir: Path = Path(".")
    roles: tuple[str, ...] = ()
    plan: RuntimePlan | None = None  # resolved once at start
    model_bytes: dict[str, int] = field(default_factory=dict)  # role → bytes of weights and buffers
    # (waiting, running) jobs in Gradio's queue; set once the Blocks exist.
    gradio_queue: Callable[[], tuple[int, int]] = lambda: (0, 0)
    # The last hour for the status tab's charts; sampled by a thread `serve` starts and stops.
    history: History | None = None
    # The tune job runner (app/tune/jobs.py TuneJobs: one job at a time, in its own process); None: this server
    # runs no tune jobs and shows no tune tab.
    tune_jobs: Any = None

    @property
    def service(self) -> Service:
        """The service; ModelUnavailableError while the models are loading."""
        return self.lifecycle.service

    @property
    def max_upload_bytes(self) -> int:
        return self.settings.max_upload_mib * 2**20

    def serve_checkpoint(self, role: str, checkpoint: str | None) -> ServingCheckpoint:
        """Point `role` at `checkpoint` (None: roll back to the previous one) — the HTTP API's and the status tab's
        one path to the service's swap — and weigh the models again for /metrics."""
        service = self.service
        state = service.rollback_checkpoint(role) if checkpoint is None else service.serve_checkpoint(role, checkpoint)
        self.model_bytes = service.weigh_models(hostinfo.module_bytes)
        return state
