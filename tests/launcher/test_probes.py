"""Memory probes: NVML with a fake NVML module (PID matching, struct-version and MIG fallbacks), the real
pynvml where a GPU is present, and RSS over a real process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from launcher_harness import wait_until

from launcher.probes import (
    NVML_VALUE_NOT_AVAILABLE_ULL,
    NvmlProbe,
    ProbeError,
    ProbeUnavailableError,
    RssProbe,
    cgroup_memory_limit,
    process_tree,
    select_probe,
)

MIB = 2**20
GIB = 2**30


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class FakeNvml:
    """Just enough of pynvml's surface; ``missing`` drops symbols, ``raises`` makes calls fail."""

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_FUNCTION_NOT_FOUND = 13
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
    nvmlMemory_v2 = 0x02000028

    def __init__(
        self,
        processes: list[tuple[int, int | None]],
        *,
        total: int = 80 * GIB,
        used: int = 30 * GIB,
        device_count: int = 1,
        raises: dict[str, int] | None = None,
        init_error: int | None = None,
    ) -> None:
        self.processes = processes
        self.total = total
        self.used = used
        self.device_count = device_count
        self.raises = raises or {}
        self.init_error = init_error
        self.calls: list[str] = []
        self.shutdown_called = False

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.raises:
            raise FakeNVMLError(self.raises[name])

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlDeviceGetCount(self) -> int:
        return self.device_count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle-{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Fake H100"

    def nvmlDeviceGetMemoryInfo(self, handle: str, version: int | None = None) -> SimpleNamespace:
        self._call("nvmlDeviceGetMemoryInfo_v2" if version else "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=self.total, used=self.used, free=self.total - self.used)

    def _procs(self, name: str) -> list[SimpleNamespace]:
        self._call(name)
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in self.processes]

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: str) -> list[SimpleNamespace]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses_v3")

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: str) -> list[SimpleNamespace]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses_v2")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses")


TreeStarter = Callable[[int, int], tuple[int, list[int]]]


def fixed_tree(*pids: int) -> Callable[[int], list[Any]]:
    return lambda root: [SimpleNamespace(pid=p) for p in pids]


# ---- NVML: per-process figures across the tree ---------------------------------------------------


TREE_SCRIPT = """
import os, subprocess, sys, time
depth, pid_file, alloc_mib = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
block = b"x" * (alloc_mib * 2**20)  # written, so resident
if depth:
    subprocess.Popen([sys.executable, __file__, str(depth - 1), pid_file, sys.argv[3]])
with open(pid_file, "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(60)
"""


@pytest.fixture
def real_tree(tmp_path: Path) -> Iterator[TreeStarter]:
    """Starts real process chains (``depth`` levels below the root, ``alloc_mib`` written in each)."""
    script = tmp_path / "tree.py"
    script.write_text(TREE_SCRIPT)
    roots: list[subprocess.Popen[bytes]] = []

    def start(depth: int, alloc_mib: int) -> tuple[int, list[int]]:
        pid_file = tmp_path / f"pids-{len(roots)}"
        argv = [sys.executable, str(script), str(depth), str(pid_file), str(alloc_mib)]
        roots.append(subprocess.Popen(argv, start_new_session=True))
        assert wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == depth + 1, 10)
        return roots[-1].pid, [int(p) for p in pid_file.read_text().split()]

    try:
        yield start
    finally:
        for root in roots:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(root.pid, signal.SIGKILL)
            root.wait(timeout=5)


def test_nvml_sums_the_whole_process_tree_and_ignores_strangers(real_tree: TreeStarter) -> None:
    root, pids = real_tree(2, 1)
    assert sorted(p.pid for p in process_tree(root)) == sorted(pids)
    stranger = 1  # init is never in the app's tree
    child, grandchild = (p for p in pids if p != root)
    nvml = FakeNvml([(child, 2 * GIB), (grandchild, 3 * GIB), (stranger, 40 * GIB)])
    probe = NvmlProbe(nvml, 0)
    sample = probe.sample(root)
    assert sample.source == "nvml-process"
    assert sample.used_bytes == 5 * GIB
    assert sample.total_bytes == 80 * GIB
    assert sorted(sample.pids) == sorted([child, grandchild])
    assert sample.note == ""
    assert probe.describe() == {
        "probe": "nvml",
        "source": "nvml-process",
        "gpu_index": 0,
        "device": "Fake H100",
        "total_mib": 81920.0,
    }


def test_nvml_prefers_v3_and_keeps_using_it() -> None:
    nvml = FakeNvml([(100, 1 * GIB)])
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100))
    probe.sample(100)
    probe.sample(100)
    listed = [c for c in nvml.calls if "Processes" in c]
    assert listed == ["nvmlDeviceGetComputeRunningProcesses_v3"] * 2
    assert "nvmlDeviceGetMemoryInfo_v2" in nvml.calls  # total at start, newest struct first


def test_nvml_falls_back_v3_to_v2_to_v1_when_the_driver_lacks_them() -> None:
    not_found = FakeNvml.NVML_ERROR_FUNCTION_NOT_FOUND
    nvml = FakeNvml(
        [(100, 1 * GIB)],
        raises={
            "nvmlDeviceGetComputeRunningProcesses_v3": not_found,
            "nvmlDeviceGetComputeRunningProcesses_v2": not_found,
        },
    )
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100))
    assert probe.sample(100).used_bytes == 1 * GIB
    assert probe.sample(100).source == "nvml-process"
    listed = [c for c in nvml.calls if "Processes" in c]
    assert listed == [
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetComputeRunningProcesses",  # the working version is remembered
    ]


def test_nvml_falls_back_when_pynvml_lacks_the_v3_symbol() -> None:
    nvml = FakeNvml([(100, 1 * GIB)])
    nvml.nvmlDeviceGetComputeRunningProcesses_v3 = None  # type: ignore[assignment,method-assign]
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100))
    assert probe.sample(100).source == "nvml-process"
    assert [c for c in nvml.calls if "Processes" in c] == ["nvmlDeviceGetComputeRunningProcesses_v2"]


def test_memory_info_v2_falls_back_to_v1() -> None:
    nvml = FakeNvml([], raises={"nvmlDeviceGetMemoryInfo_v2": FakeNvml.NVML_ERROR_FUNCTION_NOT_FOUND})
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100))
    sample = probe.sample(100)
    assert sample.source == "nvml-device" and sample.used_bytes == 30 * GIB
    assert nvml.calls.count("nvmlDeviceGetMemoryInfo_v2") == 1  # tried once, then v1 only
    assert nvml.calls.count("nvmlDeviceGetMemoryInfo") == 2


@pytest.mark.parametrize("unavailable", [None, NVML_VALUE_NOT_AVAILABLE_ULL])
def test_mig_without_per_process_memory_falls_back_to_device(unavailable: int | None) -> None:
    nvml = FakeNvml([(100, unavailable), (101, 2 * GIB)], used=12 * GIB)
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100, 101))
    sample = probe.sample(100)
    assert sample.source == "nvml-device"
    assert sample.used_bytes == 12 * GIB
    assert "MIG" in sample.note


def test_per_process_not_supported_falls_back_to_device() -> None:
    nvml = FakeNvml(
        [(100, 1 * GIB)],
        used=7 * GIB,
        raises={"nvmlDeviceGetComputeRunningProcesses_v3": FakeNvml.NVML_ERROR_NOT_SUPPORTED},
    )
    sample = NvmlProbe(nvml, 0, tree=fixed_tree(100)).sample(100)
    assert (sample.source, sample.used_bytes) == ("nvml-device", 7 * GIB)
    assert "not supported" in sample.note


def test_no_pid_match_falls_back_to_device_level() -> None:
    # A container without the host PID namespace: NVML reports host PIDs, psutil sees container PIDs.
    nvml = FakeNvml([(45_001, 20 * GIB)], used=21 * GIB)
    sample = NvmlProbe(nvml, 0, tree=fixed_tree(7, 8)).sample(7)
    assert sample.source == "nvml-device"
    assert sample.used_bytes == 21 * GIB
    assert sample.pids == (7, 8)
    assert "PID namespace" in sample.note


def test_other_nvml_errors_become_probe_errors() -> None:
    nvml = FakeNvml([(100, GIB)], raises={"nvmlDeviceGetComputeRunningProcesses_v3": 15})  # GPU is lost
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100))
    with pytest.raises(ProbeError, match="NVML"):
        probe.sample(100)


def test_holds_memory_until_nvml_stops_listing_the_old_pids() -> None:
    nvml = FakeNvml([(100, GIB)])
    probe = NvmlProbe(nvml, 0, tree=fixed_tree(100))
    exited = SimpleNamespace(pid=100, is_running=lambda: False, status=lambda: "zombie")
    assert probe.holds_memory([exited]) is True  # the process is gone, but the driver still lists it
    nvml.processes = []
    assert probe.holds_memory([exited]) is False
    assert probe.holds_memory([psutil.Process(os.getpid())]) is True  # a live process holds its memory


def test_select_probe_auto_falls_back_to_rss_and_says_why() -> None:
    def no_gpu() -> FakeNvml:
        return FakeNvml([], init_error=9)  # NVML_ERROR_DRIVER_NOT_LOADED

    probe, reason = select_probe("auto", 0, load_nvml=no_gpu)
    assert isinstance(probe, RssProbe)
    assert reason.startswith("NVML unavailable") and reason.endswith("using RSS")

    probe, reason = select_probe("auto", 0, load_nvml=lambda: FakeNvml([], device_count=0))
    assert isinstance(probe, RssProbe) and "no GPU" in reason

    def no_module() -> FakeNvml:
        raise ImportError("No module named 'pynvml'")

    probe, reason = select_probe("auto", 0, load_nvml=no_module)
    assert isinstance(probe, RssProbe) and "pynvml" in reason


def test_select_probe_nvml_requested_but_unavailable_raises() -> None:
    with pytest.raises(ProbeUnavailableError, match="init failed"):
        select_probe("nvml", 0, load_nvml=lambda: FakeNvml([], init_error=9))
    fake = FakeNvml([], device_count=2)
    with pytest.raises(ProbeUnavailableError, match=r"--gpu-index 2 is out of range: NVML sees GPUs 0\.\.1"):
        select_probe("nvml", 2, load_nvml=lambda: fake)
    assert fake.shutdown_called


def test_select_probe_prefers_nvml_when_it_works() -> None:
    probe, reason = select_probe("auto", 1, load_nvml=lambda: FakeNvml([], device_count=2))
    assert isinstance(probe, NvmlProbe) and reason == "NVML on GPU 1"
    probe, reason = select_probe("rss", 0, load_nvml=lambda: FakeNvml([]))
    assert isinstance(probe, RssProbe) and reason == "requested with --probe rss"


# ---- the real NVML ------------------------------------------------------------------------------


def _real_nvml_skip_reason() -> str | None:
    try:
        import pynvml
    except ImportError as exc:
        return f"pynvml (nvidia-ml-py) not installed: {exc}"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"no NVML on this machine ({exc}): needs an NVIDIA driver and GPU"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "NVML sees no GPU"
    finally:
        pynvml.nvmlShutdown()
    return None


_SKIP_REAL_NVML = _real_nvml_skip_reason()


@pytest.mark.gpu
@pytest.mark.skipif(_SKIP_REAL_NVML is not None, reason=str(_SKIP_REAL_NVML))
def test_real_nvml_probe_reports_device_memory() -> None:
    probe, reason = select_probe("nvml", 0)
    try:
        assert isinstance(probe, NvmlProbe) and reason == "NVML on GPU 0"
        total = probe.total_bytes()
        assert total > 1 * GIB
        sample = probe.sample(os.getpid())
        assert sample.total_bytes == total
        assert 0 <= sample.used_bytes <= total
        # This test process holds no CUDA context, so NVML cannot attribute memory to it.
        assert sample.source in ("nvml-process", "nvml-device")
        if sample.source == "nvml-device":
            assert sample.note
        assert probe.holds_memory([]) is False
    finally:
        probe.close()


# ---- RSS -----------------------------------------------------------------------------------------


def test_rss_probe_sums_a_real_tree(real_tree: TreeStarter) -> None:
    root, pids = real_tree(1, 80)
    time.sleep(0.1)
    probe = RssProbe()
    sample = probe.sample(root)
    assert sample.source == "rss"
    assert sorted(sample.pids) == sorted(pids)
    assert sample.used_bytes >= 160 * MIB  # 80 MiB written in each of the two processes
    ram = psutil.virtual_memory().total
    assert sample.total_bytes == min(ram, cgroup_memory_limit() or ram)
    procs = process_tree(root)
    assert probe.holds_memory(procs) is True
    os.killpg(root, signal.SIGKILL)
    assert wait_until(lambda: not probe.holds_memory(procs), 5)  # the root is a zombie until reaped: gone
    assert probe.sample(123_456_789).used_bytes == 0  # no such process: nothing to count


def cgroup_files(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(("files", "limit"), [
    ({"memory.max": "8589934592"}, 8 * 2**30),  # cgroup v2: a pod's limits.memory of 8Gi
    ({"memory.max": "max"}, None),  # v2 without a limit
    ({"memory/memory.limit_in_bytes": "4294967296"}, 4 * 2**30),  # cgroup v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712"}, None),  # v1's "no limit"
    ({}, None),  # no cgroup file system (not Linux, or not mounted)
])
def test_cgroup_memory_limit_reads_v2_then_v1(tmp_path: Path, files: dict[str, str], limit: int | None) -> None:
    assert cgroup_memory_limit(cgroup_files(tmp_path, files)) == limit


def test_rss_ratio_is_of_a_container_limit_below_the_machine_ram(tmp_path: Path) -> None:
    """In a pod the kernel kills at limits.memory, not at the node's RAM: 80 % must be of the limit."""
    ram = psutil.virtual_memory().total
    probe = RssProbe(cgroup_root=cgroup_files(tmp_path, {"memory.max": str(ram // 4)}))
    assert probe.total_bytes() == ram // 4 and probe.sample(123_456_789).total_bytes == ram // 4
    assert probe.describe()["total_of"] == "cgroup"
    roomy = RssProbe(cgroup_root=cgroup_files(tmp_path / "roomy", {"memory.max": str(ram * 2)}))
    assert roomy.total_bytes() == ram and roomy.describe()["total_of"] == "ram"


def test_the_host_is_watched_beside_a_gpu_probe_only() -> None:
    from launcher.probes import RssProbe, host_probe

    gpu = NvmlProbe(FakeNvml([(100, 1 * GIB)]), 0, lambda pid: [])
    assert isinstance(host_probe(gpu, 0.8), RssProbe)
    assert host_probe(gpu, 0.0) is None  # --host-threshold-ratio 0: off
    assert host_probe(RssProbe(), 0.8) is None  # the RSS probe's own threshold already is the host's
