"""The GPU check: this machine's GPUs from nvidia-smi, the driver new enough for PyTorch's CUDA build, or the CPU.

deploy.sh evaluates what `shell_assignments` returns (every value quoted by shlex): CPU=0|1, GPU_DRIVER and
GPU_SPECS, the `NAME, MIB, CC` lines that `python -m app profile --gpu` takes; and a `say` line for its output.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass

from app.deploy import Stop
from app.errors import InputError
from app.hostprofile import GpuFacts

# PyPI's torch is a CUDA 12+ build: no driver older than branch 525 can run it (after installing, deploy.sh checks
# that torch really sees the GPU).
MIN_DRIVER_MAJOR = 525
QUERY = ["--query-gpu=name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpus:
    specs: tuple[str, ...]  # "NAME, MIB, CC" per GPU, GPU 0 first
    driver: str


def read_nvidia_smi(smi: str, sudo: str) -> Gpus | None:
    """The GPUs nvidia-smi reports; None when there is no nvidia-smi. Stops when it fails or says too little."""
    exe = shutil.which(smi)
    if exe is None:
        return None
    r = subprocess.run([exe, *QUERY], capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or not out:
        raise Stop(f"nvidia-smi is installed but failed (exit {r.returncode}): {out.splitlines()[0] if out else ''}",
                   "The NVIDIA driver is not working. After a driver or kernel upgrade a reboot usually fixes it;",
                   f"otherwise reinstall the driver (Ubuntu: {sudo}ubuntu-drivers install). To run on the CPU "
                   "instead: --cpu")
    lines = [line for line in out.splitlines() if line.strip()]
    specs = tuple(line.rsplit(",", 1)[0] for line in lines)
    try:
        GpuFacts.parse(specs[0])
    except InputError:
        raise Stop(f"cannot read the GPU's memory and compute capability from nvidia-smi: '{specs[0]}'",
                   "(MIG and some virtual GPUs report [N/A]) run on the CPU (--cpu), or set the batch sizes by hand "
                   "(--max-batch-tokens …)") from None
    return Gpus(specs, lines[0].rsplit(",", 1)[-1].strip())


def check(smi: str, *, cpu: bool, demo: bool, profile: bool, prog: str, sudo: str) -> tuple[bool, Gpus | None, str]:
    """(run on the CPU?, the GPUs, what to say). `profile`: `deploy.sh profile`, where no GPU means the CPU
    profile and the driver's age does not matter."""
    if cpu:
        return True, None, "" if profile else "GPU: not used (--cpu): inference runs on the CPU, much slower"
    gpus = read_nvidia_smi(smi, sudo)
    if gpus is None:
        if profile:
            return True, None, ""
        if not demo:
            raise Stop("no NVIDIA GPU driver found: nvidia-smi is not on the PATH",
                       f"On a GPU VM, install the NVIDIA driver and reboot (Ubuntu: {sudo}ubuntu-drivers install;",
                       "Debian: apt-get install nvidia-driver from non-free), or use a cloud image that has it.",
                       f"No GPU on this machine? Run on the CPU (slow, for trying things out): {prog} --cpu",
                       f"or have a first look with tiny offline models: {prog} --demo")
        return True, None, "GPU: none found (no nvidia-smi); --demo runs on the CPU"
    if profile:
        return False, gpus, ""
    major = gpus.driver.split(".")[0]
    if major.isdigit() and int(major) < MIN_DRIVER_MAJOR:
        raise Stop(f"NVIDIA driver {gpus.driver} is too old: PyTorch's CUDA 12 build needs driver {MIN_DRIVER_MAJOR} "
                   "or newer",
                   f"upgrade the driver (Ubuntu: {sudo}ubuntu-drivers install; then reboot), or run on the CPU: --cpu")
    more = f" ({len(gpus.specs)} GPUs; Wenmo uses GPU 0)" if len(gpus.specs) > 1 else ""
    return False, gpus, f"GPU: {gpus.specs[0]}, driver {gpus.driver}{more}"


def shell_assignments(cpu: bool, gpus: Gpus | None, say: str) -> str:
    specs = " ".join(shlex.quote(s) for s in (gpus.specs if gpus else ()))
    lines = [f"CPU={int(cpu)} GPU_DRIVER={shlex.quote(gpus.driver if gpus else '')}", f"GPU_SPECS=({specs})"]
    if say:
        lines.append(f"say {shlex.quote(say)}")
    return "\n".join(lines) + "\n"
