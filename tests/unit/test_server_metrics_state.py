"""The server's scrape-time series (app/web/server.py ServerStateCollector) on a real context, before any model is
loaded, with the two readings that need a GPU faked (NVML's per-device memory, torch's CUDA allocator): names,
labels and values in the units the README gives."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

from app import hostinfo
from app.config import Settings
from app.engine.limiter import ConcurrencyLimiter
from app.web.context import ServerContext
from app.web.lifecycle import Lifecycle
from app.web.server import ServerStateCollector

MIB = 2**20


def scrape(ctx: ServerContext) -> dict[tuple[str, tuple], float]:
    body, _ = ctx.metrics.render()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def loading_context() -> ServerContext:
    ctx = ServerContext(settings=Settings(), lifecycle=Lifecycle(), limiter=ConcurrencyLimiter(3, 7))
    ctx.metrics.add_collector(ServerStateCollector(ctx))
    return ctx


def test_while_loading_the_gauges_say_so_and_no_role_has_a_series(monkeypatch):
    monkeypatch.setattr(hostinfo, "gpus", list)  # no NVML
    monkeypatch.setattr(hostinfo, "cuda_allocated_bytes", lambda: None)
    monkeypatch.setattr(hostinfo, "process_gpu_bytes", lambda pid: None)
    s = scrape(loading_context())
    assert s[("wenmo_ready", ())] == 0 and s[("wenmo_draining", ())] == 0
    assert s[("wenmo_max_concurrent", ())] == 3 and s[("wenmo_max_queue", ())] == 7
    assert s[("wenmo_in_flight", ())] == 0 and s[("wenmo_queue_depth", ())] == 0
    assert s[("wenmo_limiter_rejected_total", ())] == 0
    assert s[("wenmo_process_resident_memory_bytes", ())] > 10 * MIB
    assert not [name for name, _ in s if "engine" in name or name == "wenmo_model_memory_bytes"]
    assert not [name for name, _ in s if "gpu" in name or "cuda" in name]


def test_gpu_memory_per_device_in_bytes_and_the_cuda_allocator(monkeypatch):
    monkeypatch.setattr(hostinfo, "gpus", lambda: [{"index": 0, "mem_used_mib": 1024.0},
                                                   {"index": 1, "mem_used_mib": 0.5}])
    monkeypatch.setattr(hostinfo, "cuda_allocated_bytes", lambda: 123_456_789)
    monkeypatch.setattr(hostinfo, "process_gpu_bytes", lambda pid: 700 * MIB if pid == os.getpid() else None)
    ctx = loading_context()
    ctx.model_bytes = {"embed": 1_000, "cross": 2_000}
    s = scrape(ctx)
    assert s[("wenmo_gpu_memory_used_bytes", (("gpu", "0"),))] == 1024 * MIB
    assert s[("wenmo_gpu_memory_used_bytes", (("gpu", "1"),))] == MIB // 2
    assert s[("wenmo_cuda_allocated_bytes", ())] == 123_456_789
    assert s[("wenmo_gpu_process_memory_bytes", ())] == 700 * MIB  # this process's share, not the card's 1,024 MiB
    assert s[("wenmo_model_memory_bytes", (("role", "cross"),))] == 2_000
    assert s[("wenmo_model_memory_bytes", (("role", "embed"),))] == 1_000


def test_a_server_without_cuda_on_a_gpu_host_holds_none_of_the_card(monkeypatch):
    """On 2026-11-28 two CPU soaks beside a CUDA one on an H200 judged the card's used memory, the CUDA server's
    steps included: a server that never started CUDA says it holds 0, so the soak judges that instead."""
    monkeypatch.setattr(hostinfo, "gpus", lambda: [{"index": 0, "mem_used_mib": 1747.9}])
    monkeypatch.setattr(hostinfo, "cuda_allocated_bytes", lambda: None)  # CUDA not started in this process
    monkeypatch.setattr(hostinfo, "process_gpu_bytes", lambda pid: None)  # NVML lists no process of this PID
    s = scrape(loading_context())
    assert s[("wenmo_gpu_process_memory_bytes", ())] == 0
    assert s[("wenmo_gpu_memory_used_bytes", (("gpu", "0"),))] > 0


def test_a_cuda_server_nvml_cannot_attribute_gives_no_share(monkeypatch):
    """A container that sees other PIDs than NVML reports: CUDA runs here but NVML names no process of this PID.
    Then no figure is better than 0, and the soak judges the card's."""
    monkeypatch.setattr(hostinfo, "gpus", lambda: [{"index": 0, "mem_used_mib": 2048.0}])
    monkeypatch.setattr(hostinfo, "cuda_allocated_bytes", lambda: 10 * MIB)
    monkeypatch.setattr(hostinfo, "process_gpu_bytes", lambda pid: None)
    s = scrape(loading_context())
    assert not [name for name, _ in s if name == "wenmo_gpu_process_memory_bytes"]
