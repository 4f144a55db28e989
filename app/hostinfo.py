"""What the machine is doing: GPU utilisation, memory and temperature through NVML, CPU and memory
through psutil where there is no GPU. Read by the status tab and /metrics.

NVML is initialised once; when it is missing (no driver, no GPU) the reason is kept and shown instead.
No torch here except an optional read of the CUDA allocator when torch is already imported.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {}
_cpu_primed: list[bool] = []


def _nvml() -> Any:
    """The pynvml module, initialised; None when NVML cannot be used (the reason is in nvml_reason())."""
    with _nvml_lock:
        if "module" in _nvml_state:
            return _nvml_state["module"]
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_state["module"] = pynvml
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError, …
            _nvml_state["module"] = None
            _nvml_state["reason"] = f"{type(e).__name__}: {e}".strip(": ")
            log.info("event=nvml_unavailable reason=%r", _nvml_state["reason"])
        return _nvml_state["module"]


def nvml_reason() -> str:
    _nvml()
    return _nvml_state.get("reason", "")


def gpus() -> list[dict[str, Any]]:
    """One dict per GPU: index, name, capability (major, minor), util_pct, mem_used_mib, mem_total_mib, temp_c,
    power_w."""
    nv = _nvml()
    if nv is None:
        return []
    out = []
    try:
        count = nv.nvmlDeviceGetCount()
    except Exception as e:
        log.warning("event=nvml_error call=nvmlDeviceGetCount error=%r", e)
        return []
    for i in range(count):
        row: dict[str, Any] = {"index": i}
        try:
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(h)
            row["name"] = name.decode() if isinstance(name, bytes) else name
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            row["mem_used_mib"] = mem.used / 2**20
            row["mem_total_mib"] = mem.total / 2**20
            row["capability"] = tuple(nv.nvmlDeviceGetCudaComputeCapability(h))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"
            out.append(row)
            continue
        # Each of these is unsupported on some devices (e.g. MIG slices): leave that figure out.
        for key, call in (("util_pct", lambda h: nv.nvmlDeviceGetUtilizationRates(h).gpu),
                          ("temp_c", lambda h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                          ("power_w", lambda h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)):
            try:
                row[key] = call(h)
            except Exception:
                row[key] = None
        out.append(row)
    return out


# NVML's "not available" marker for a 64-bit figure (older pynvml does not map it to None).
NVML_NOT_AVAILABLE = 2**64 - 1


def process_gpu_bytes(pid: int) -> int | None:
    """GPU memory NVML attributes to `pid`, summed over the devices; None when NVML cannot say: no NVML, no
    CUDA context in that process yet, per-process figures unavailable (MIG), or a PID namespace that NVML
    does not share (a container: NVML lists host PIDs)."""
    nv = _nvml()
    if nv is None:
        return None
    used, found = 0, False
    try:
        for i in range(nv.nvmlDeviceGetCount()):
            for proc in nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(i)):
                if proc.pid != pid:
                    continue
                if proc.usedGpuMemory is None or proc.usedGpuMemory == NVML_NOT_AVAILABLE:
                    return None
                used, found = used + int(proc.usedGpuMemory), True
    except Exception as e:  # NotSupported, a lost GPU, …: the caller falls back to RSS
        log.debug("event=nvml_error call=process_gpu_bytes error=%r", e)
        return None
    return used if found else None


def host() -> dict[str, Any]:
    """CPU and memory of the machine and of this process."""
    import psutil

    proc = psutil.Process(os.getpid())
    vm = psutil.virtual_memory()
    if not _cpu_primed:
        # The first reading of a non-blocking cpu_percent is always 0: take a short real one once.
        psutil.cpu_percent(interval=0.1)
        _cpu_primed.append(True)
    return {
        "cpu_count": psutil.cpu_count() or 1,
        "cpu_pct": psutil.cpu_percent(interval=None),
        "mem_used_mib": (vm.total - vm.available) / 2**20,
        "mem_total_mib": vm.total / 2**20,
        "process_rss_mib": proc.memory_info().rss / 2**20,
    }


# /proc/self/status' resident memory by kind (the kernel's counters: no page walk, cheap enough for every scrape).
_RESIDENT_FIELDS = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}


def process_status(status_text: str | None = None) -> dict[str, int] | None:
    """This process's resident bytes by kind — `anon` (heaps, Python's arenas, thread stacks, anonymous mmaps),
    `file` (mapped code and files), `shmem` — and `threads` (its OS threads, a count), from /proc/self/status;
    None where there is no such file (not Linux). `status_text` stands in for the file in tests."""
    if status_text is None:
        try:
            with open("/proc/self/status", encoding="utf-8") as f:
                status_text = f.read()
        except OSError:
            return None
    parts: dict[str, int] = {}
    for line in status_text.splitlines():
        fields = line.split()
        if fields and fields[0] in _RESIDENT_FIELDS and len(fields) >= 3 and fields[2] == "kB":
            parts[_RESIDENT_FIELDS[fields[0]]] = int(fields[1]) * 1024
        elif fields and fields[0] == "Threads:" and len(fields) == 2:
            parts["threads"] = int(fields[1])
    return parts if len(parts) == len(_RESIDENT_FIELDS) + 1 else None


def cuda_allocated_bytes() -> int | None:
    """Bytes held by torch's CUDA allocator in this process, when torch is loaded and CUDA is in use."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return int(sum(torch.cuda.memory_allocated(d) for d in range(torch.cuda.device_count())))
    except Exception:
        return None


def module_bytes(adapter: Any) -> int:
    """Bytes of parameters and buffers of an adapter's model (0 when it has none we can see)."""
    model = getattr(adapter, "model", None)
    total = 0
    for getter in ("parameters", "buffers"):
        items = getattr(model, getter, None)
        if items is None:
            continue
        try:
            total += sum(t.numel() * t.element_size() for t in items())
        except Exception:
            return total
    return total
