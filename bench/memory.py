"""Memory probes for one measurement process.

CPU: the kernel's peak resident set (VmHWM) is reset through /proc/self/clear_refs ("5") after the model
is loaded and warmed up, so the peak of the measured run is known exactly. The reset also resets
getrusage's ru_maxrss (both are mm->hiwater_rss), so the load-phase peak is read before it and the
process's lifetime peak is the larger of the two phases. Where the reset is not allowed, a sampler thread (every 5 ms)
stands in and says so. GPU: torch.cuda.max_memory_allocated (tensors) and NVML (what the process holds,
caching allocator included; device-level used memory where per-process figures are unavailable, as in
containers without the host PID namespace or under MIG).
"""

from __future__ import annotations

import os
import re
import resource
import threading
from typing import Any

MIB = 1 << 20


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib / 1024
    import psutil

    return psutil.Process().memory_info().rss / MIB


def lifetime_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class RssPeak:
    """Peak RSS of a phase: `start()` before it, `stop()` after it returns the peak in MiB."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.method = ""
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            if _status_kib("VmHWM") is None:
                raise OSError("no VmHWM")
            self.method = "VmHWM after /proc/self/clear_refs reset (exact)"
            return
        except OSError:
            pass
        self.method = f"sampled every {self.interval_s * 1000:.0f} ms (may miss short peaks)"
        self._peak = rss_mib()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, rss_mib())

    def stop(self) -> float:
        if self._thread is None:
            return (_status_kib("VmHWM") or 0) / 1024
        self._stop.set()
        self._thread.join()
        return max(self._peak, rss_mib())


def gpu_memory(device: str) -> dict[str, Any]:
    """max_memory_allocated, memory_reserved and NVML figures for a CUDA device, in MiB."""
    import torch

    idx = torch.device(device).index or 0
    out: dict[str, Any] = {
        "max_allocated_mib": torch.cuda.max_memory_allocated(idx) / MIB,
        "reserved_mib": torch.cuda.memory_reserved(idx) / MIB,
        "nvml_process_mib": None,
        "nvml_device_used_mib": None,
        "nvml_note": "",
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = _nvml_handle(pynvml, idx)
            out["nvml_device_used_mib"] = pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                mine = [p.usedGpuMemory for p in procs if p.pid == os.getpid() and p.usedGpuMemory]
                if mine:
                    out["nvml_process_mib"] = sum(mine) / MIB
                else:
                    out["nvml_note"] = "this PID not in NVML's list (container PID namespace?): device-level only"
            except pynvml.NVMLError as e:
                out["nvml_note"] = f"per-process figures unavailable ({e}): device-level only"
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001 - NVML missing or broken: report, do not fail the measurement
        out["nvml_note"] = f"NVML unavailable: {type(e).__name__}: {e}"
    return out


def _nvml_handle(pynvml, idx: int):  # noqa: ANN001, ANN202
    """NVML numbers devices on the host; CUDA_VISIBLE_DEVICES renumbers them, so match by PCI bus id."""
    import torch

    props = torch.cuda.get_device_properties(idx)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain = getattr(props, "pci_domain_id", 0)
        dev = getattr(props, "pci_device_id", 0)
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08x}:{bus:02x}:{dev:02x}.0".encode())
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(idx)
