"""Memory probes: how much memory the app's process tree holds, behind one small interface.

- ``NvmlProbe``: GPU memory via NVML (``pynvml`` from nvidia-ml-py, passed in as a module object so tests
  can hand it a fake). Per-process figures for the app's whole tree when NVML can attribute them
  (source ``"nvml-process"``); device-level used memory when it cannot (source ``"nvml-device"``): no
  PID matches (a container without the host PID namespace sees other PIDs than NVML reports) or the
  per-process figure is unavailable (MIG: ``usedGpuMemory`` is None, or NotSupported).
- ``RssProbe``: resident memory of the tree via psutil (source ``"rss"``), for machines without a GPU.

Both count the app's own processes (``app_tree``): a tune job the app started (``python -m app tune …`` or
``wenmo tune …``, README "The Tune tab") and its descendants are left out, so training beside the server never
makes the watchdog restart the server. Device-level NVML (the fallback) cannot tell processes apart: there the
threshold must leave room for a tune job (README, launcher section).

This module must not import ``app``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

# NVML's "value not available" marker for 64-bit fields (pynvml maps it to None in newer versions only).
NVML_VALUE_NOT_AVAILABLE_ULL = 2**64 - 1

# Newest struct version first: an older driver lacks the newer symbols (FunctionNotFound).
PROCESS_LIST_FUNCTIONS = (
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses",
)

PROBE_KINDS = ("auto", "nvml", "rss")


class ProbeUnavailableError(Exception):
    """The requested probe cannot work on this machine (no NVML library, no GPU, bad index)."""


class ProbeError(Exception):
    """One sample failed (e.g. NVML reported an error); the supervisor skips that sample."""


class _NeverRaisedError(Exception):
    """Stands in for an exception class a (fake) NVML module does not define."""


@dataclass(frozen=True)
class MemorySample:
    used_bytes: int
    total_bytes: int
    source: str  # "nvml-process" | "nvml-device" | "rss"
    pids: tuple[int, ...]  # the PIDs the figure was summed over (all tree PIDs for nvml-device)
    note: str = ""  # why a fallback source was used; empty when the preferred source worked


class MemoryProbe(Protocol):
    name: str

    def describe(self) -> dict[str, object]:
        """What was chosen, for the ``probe_selected`` event."""
        ...

    def total_bytes(self) -> int:
        """The capacity a ``--threshold-ratio`` is relative to."""
        ...

    def sample(self, root_pid: int) -> MemorySample:
        """Memory held by ``root_pid`` and its descendants; raises ``ProbeError``."""
        ...

    def holds_memory(self, procs: Sequence[psutil.Process]) -> bool:
        """Whether the given (old) processes still hold memory a new app would need."""
        ...

    def close(self) -> None: ...


def process_tree(root_pid: int) -> list[psutil.Process]:
    """The process and all its descendants that still exist (an empty list when the root is gone)."""
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def runs_tune(argv: Sequence[str]) -> bool:
    """Whether a command line is Wenmo's tune command: ``python [options] -m app tune …`` or ``[python] …/wenmo
    tune …`` — the program it runs, not a word anywhere in its arguments."""
    for i, arg in enumerate(argv):
        if arg == "-m":  # the interpreter's options end here; the module and its arguments follow
            return list(argv[i + 1:i + 3]) == ["app", "tune"]
        if arg.rsplit("/", 1)[-1] == "wenmo":
            return list(argv[i + 1:i + 2]) == ["tune"]
        if i > 0 and not arg.startswith("-"):  # the interpreter runs some other script
            return False
    return False


def app_tree(root_pid: int) -> list[psutil.Process]:
    """``process_tree`` without tune jobs and their descendants: the processes whose memory is the app's."""
    tree = process_tree(root_pid)
    left_out: set[int] = set()
    for proc in tree:
        if proc.pid in left_out:
            continue
        try:
            if runs_tune(proc.cmdline()):
                left_out.add(proc.pid)
                left_out.update(p.pid for p in proc.children(recursive=True))
        except psutil.Error:
            continue  # exited meanwhile (its memory is gone too), or not ours to read
    return [p for p in tree if p.pid not in left_out]


def is_gone(proc: psutil.Process) -> bool:
    """Exited (a zombie holds no memory; ``is_running`` also guards against PID reuse)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """This process's cgroup memory limit in bytes (cgroup v2 `memory.max`, else v1 `memory.limit_in_bytes`), or
    None where there is none. In a container (a pod's `resources.limits.memory`) the kernel kills at this figure,
    whatever the machine's RAM, so that is what a ratio must be of."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 writes "no limit" as a page-rounded 2**63 - 1
            return int(text)
        return None  # "max" (v2): no limit
    return None


class RssProbe:
    """Resident memory of the process tree; the ratio is relative to total system RAM, or to the cgroup's
    memory limit when that is lower (a container's).

    Shared pages (fork, shared libraries) are counted once per process, so the figure errs high.
    """

    name = "rss"

    def __init__(self, tree: Callable[[int], list[psutil.Process]] = app_tree,
                 cgroup_root: Path = CGROUP_ROOT) -> None:
        self._tree = tree
        self._cgroup_root = cgroup_root

    def describe(self) -> dict[str, object]:
        limit = cgroup_memory_limit(self._cgroup_root)
        of = "cgroup" if limit is not None and limit < psutil.virtual_memory().total else "ram"
        return {"probe": self.name, "source": "rss", "total_mib": round(self.total_bytes() / 2**20, 1),
                "total_of": of}

    def total_bytes(self) -> int:
        ram = int(psutil.virtual_memory().total)
        limit = cgroup_memory_limit(self._cgroup_root)
        return ram if limit is None else min(ram, limit)

    def sample(self, root_pid: int) -> MemorySample:
        used = 0
        pids = []
        for proc in self._tree(root_pid):
            try:
                used += proc.memory_info().rss
            except psutil.Error:
                continue  # exited between listing and reading: it holds nothing any more
            pids.append(proc.pid)
        return MemorySample(used, self.total_bytes(), "rss", tuple(pids))

    def holds_memory(self, procs: Sequence[psutil.Process]) -> bool:
        return not all(is_gone(p) for p in procs)

    def close(self) -> None:
        pass


class NvmlProbe:
    """GPU memory of the app's process tree on one device, via an injected NVML module."""

    name = "nvml"

    def __init__(
        self, nvml: Any, gpu_index: int, tree: Callable[[int], list[psutil.Process]] = app_tree
    ) -> None:
        self._nvml = nvml
        self._tree = tree
        self._error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        # pynvml raises this instead of FunctionNotFound from the unversioned process-list call.
        self._mismatch: type[BaseException] = getattr(nvml, "NVMLLibraryMismatchError", _NeverRaisedError)
        try:
            nvml.nvmlInit()
        except self._error as exc:
            raise ProbeUnavailableError(f"NVML init failed: {exc}") from exc
        try:
            count = int(nvml.nvmlDeviceGetCount())
            if count == 0:
                raise ProbeUnavailableError("NVML sees no GPU")
            if not 0 <= gpu_index < count:
                raise ProbeUnavailableError(
                    f"--gpu-index {gpu_index} is out of range: NVML sees GPUs 0..{count - 1}"
                )
            self._handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
            self._gpu_index = gpu_index
            self._device_name = _text(nvml.nvmlDeviceGetName(self._handle))
            self._memory_v2 = True
            self._process_functions = list(PROCESS_LIST_FUNCTIONS)
            self._total = int(self._device_memory().total)
        except ProbeUnavailableError:
            self.close()
            raise
        except self._error as exc:
            self.close()
            raise ProbeUnavailableError(f"NVML device {gpu_index} unusable: {exc}") from exc

    def describe(self) -> dict[str, object]:
        return {
            "probe": self.name,
            "source": "nvml-process",
            "gpu_index": self._gpu_index,
            "device": self._device_name,
            "total_mib": round(self._total / 2**20, 1),
        }

    def total_bytes(self) -> int:
        return self._total

    def sample(self, root_pid: int) -> MemorySample:
        pids = tuple(p.pid for p in self._tree(root_pid))
        try:
            processes, note = self._running_processes()
            if processes is not None:
                matched = [p for p in processes if p.pid in pids]
                if not matched:
                    note = (
                        "no NVML process matches the app's PIDs (container without the host PID "
                        "namespace, or no CUDA context yet); using device-level used memory"
                    )
                elif any(_unavailable(p.usedGpuMemory) for p in matched):
                    note = "per-process GPU memory not available (MIG?); using device-level used memory"
                else:
                    used = sum(int(p.usedGpuMemory) for p in matched)
                    return MemorySample(
                        used, self._total, "nvml-process", tuple(sorted({p.pid for p in matched}))
                    )
            device = self._device_memory()
        except self._error as exc:
            raise ProbeError(f"NVML: {exc}") from exc
        return MemorySample(int(device.used), self._total, "nvml-device", pids, note)

    def holds_memory(self, procs: Sequence[psutil.Process]) -> bool:
        if not all(is_gone(p) for p in procs):
            return True
        # The processes are gone, but the driver may still be tearing their contexts down.
        pids = {p.pid for p in procs}
        try:
            processes, _ = self._running_processes()
        except self._error:
            return False  # cannot tell per process; the processes themselves are gone
        return processes is not None and any(p.pid in pids for p in processes)

    def close(self) -> None:
        with contextlib.suppress(self._error):
            self._nvml.nvmlShutdown()

    def _running_processes(self) -> tuple[list[Any] | None, str]:
        """NVML's compute processes on the device, or ``None`` and why when per-process data is absent."""
        nvml = self._nvml
        while self._process_functions:
            name = self._process_functions[0]
            function = getattr(nvml, name, None)
            if function is None:
                self._process_functions.pop(0)  # this pynvml does not know the symbol
                continue
            try:
                return list(function(self._handle)), ""
            except self._mismatch:
                self._process_functions.pop(0)
            except self._error as exc:
                code = getattr(exc, "value", None)
                if code in _codes(
                    nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_ARGUMENT_VERSION_MISMATCH"
                ):
                    self._process_functions.pop(0)  # the driver lacks this struct version: try older
                elif code in _codes(nvml, "NVML_ERROR_NOT_SUPPORTED"):
                    return None, "per-process GPU memory not supported (MIG?); using device-level used memory"
                else:
                    raise
        return None, "no NVML process-list function works here; using device-level used memory"

    def _device_memory(self) -> Any:
        nvml = self._nvml
        if self._memory_v2:
            try:
                # v2 reports "used" without the driver's reserved memory, closer to what nvidia-smi shows.
                return nvml.nvmlDeviceGetMemoryInfo(self._handle, version=nvml.nvmlMemory_v2)
            except (TypeError, AttributeError):
                self._memory_v2 = False  # pynvml too old for the version argument
            except self._error as exc:
                if getattr(exc, "value", None) not in _codes(
                    nvml,
                    "NVML_ERROR_FUNCTION_NOT_FOUND",
                    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
                    "NVML_ERROR_NOT_SUPPORTED",
                ):
                    raise
                self._memory_v2 = False  # driver too old for nvmlDeviceGetMemoryInfo_v2
        return nvml.nvmlDeviceGetMemoryInfo(self._handle)


def _codes(nvml: Any, *names: str) -> set[int]:
    return {getattr(nvml, n) for n in names if hasattr(nvml, n)}


def _unavailable(value: object) -> bool:
    return value is None or value == NVML_VALUE_NOT_AVAILABLE_ULL


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def load_pynvml() -> Any:
    """Import nvidia-ml-py's ``pynvml`` (kept out of module import time: no GPU, no import cost)."""
    return importlib.import_module("pynvml")


def host_probe(main: MemoryProbe, ratio: float,
               tree: Callable[[int], list[psutil.Process]] = app_tree) -> RssProbe | None:
    """The probe of the host's memory beside a GPU probe (``--host-threshold-ratio``): a server on a GPU can run
    the host out of memory long before its GPU memory passes a threshold. None with the RSS probe (its threshold
    already is the host's) or with the ratio 0."""
    if ratio <= 0 or main.name == RssProbe.name:
        return None
    return RssProbe(tree)


def select_probe(
    kind: str,
    gpu_index: int,
    load_nvml: Callable[[], Any] = load_pynvml,
    tree: Callable[[int], list[psutil.Process]] = app_tree,
) -> tuple[MemoryProbe, str]:
    """Resolve ``--probe auto|nvml|rss`` into a probe and the reason for the choice.

    ``nvml`` that cannot work raises ``ProbeUnavailableError`` (the operator asked for the GPU); ``auto``
    falls back to RSS and says why.
    """
    if kind not in PROBE_KINDS:
        raise ProbeUnavailableError(f"unknown probe {kind!r}; choose one of {', '.join(PROBE_KINDS)}")
    if kind == "rss":
        return RssProbe(tree), "requested with --probe rss"
    try:
        nvml = load_nvml()
    except ImportError as exc:
        if kind == "nvml":
            raise ProbeUnavailableError(f"cannot import pynvml (install nvidia-ml-py): {exc}") from exc
        return RssProbe(tree), f"NVML unavailable (cannot import pynvml: {exc}); using RSS"
    try:
        return NvmlProbe(nvml, gpu_index, tree), f"NVML on GPU {gpu_index}"
    except ProbeUnavailableError as exc:
        if kind == "nvml":
            raise
        return RssProbe(tree), f"NVML unavailable ({exc}); using RSS"
