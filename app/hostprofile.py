"""This machine's serving profile: GPU facts (name, memory, compute capability) → WENMO_* settings.

What `python -m app profile` prints and what deploy.sh writes into wenmo.env. Memory sizes the batches; the
dtype is not a setting here but the plan's own choice, asked of `resolve_plan` (app/engine/runtime.py) with the
card's compute capability in place of the CUDA probe, so the dtype printed is the one the app will pick (and
ds_config.json's precision blocks keep their say). GPU facts come in as `GpuFacts`: from `--gpu` (deploy.sh
passes what nvidia-smi says; tests pass any card), else from NVML (app/hostinfo.py); none means the CPU profile.

Standard library only, like everything it imports: deploy.sh runs `python -m app profile` with the system
Python before the virtualenv exists (app/__main__.py answers `profile` without importing app/cli.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app import hostinfo, settingsfiles
from app.config import REPO_ROOT
from app.engine.dsconfig import load_ds_config
from app.engine.runtime import bf16_at_full_rate, resolve_plan
from app.errors import InputError

GPU_FORMAT = "NAME,MEMORY_MIB,COMPUTE_CAPABILITY (nvidia-smi --query-gpu=name,memory.total,compute_cap " \
             "--format=csv,noheader,nounits), e.g. 'NVIDIA A10, 23028, 8.6'"
# Weights take ~1.8 GB in half precision for the three models; the rest is activation room (BERT-large: ~0.13 GB
# per 1000 tokens per layer at peak, attention included, at 512 tokens). Smallest memory first.
TIERS = (  # (at least MiB, class, max_batch_tokens, max_batch_size, max_length)
    (0, "small GPU (< 14 GB: MIG slice or 8-12 GB card)", 4096, 32, 256),
    (14000, "16 GB class (T4, V100 16GB, A4000)", 8192, 64, 512),
    (20000, "24 GB class (A10, L4, RTX 3090/4090, A5000)", 16384, 128, 512),
    (36000, "40-48 GB class (A100 40GB, L40S, A40, A6000)", 32768, 256, 512),
    (70000, "80 GB class (A100 80GB, H100, H200)", 65536, 256, 512),
)
THRESHOLD_GPU_PERCENT = 85  # of the GPU's memory: a leak is caught before an out-of-memory error
THRESHOLD_CPU_RATIO = "0.80"  # of the machine's RAM, or of a container's memory limit when lower


@dataclass(frozen=True)
class GpuFacts:
    name: str
    memory_mib: int
    capability: tuple[int, int]

    @classmethod
    def parse(cls, text: str) -> GpuFacts:
        """One line of nvidia-smi's CSV (the name may hold commas: the two figures are the last fields)."""
        parts = [p.strip() for p in text.rsplit(",", 2)]
        try:
            name, mib, cc = parts
            major, minor = (int(x) for x in cc.split("."))
            return cls(name or "GPU", int(float(mib)), (major, minor))
        except ValueError:
            raise InputError(f"--gpu {text!r}: expected {GPU_FORMAT}") from None

    def describe(self) -> str:
        return f"{self.name}, {self.memory_mib} MiB, compute capability {self.capability[0]}.{self.capability[1]}"


@dataclass(frozen=True)
class Profile:
    title: str
    settings: tuple[settingsfiles.Setting, ...]
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        lines = [f"# profile: {self.title}", *(f"# {note}" for note in self.notes)]
        for s in self.settings:
            lines += [f"# {s.why}", f"{s.key}={s.value}"]
        return "\n".join(lines) + "\n"


def planned_dtype(gpu: GpuFacts, ds_config: str | Path) -> tuple[str, str]:
    """The dtype the app's plan picks on this card, and why (the plan's own words)."""
    plan = resolve_plan("cuda", "auto", "torch", load_ds_config(ds_config), cuda_available=lambda: True,
                        bf16_supported=lambda _device: bf16_at_full_rate(gpu.capability))
    return plan.dtype, next(r for r in plan.reasons if r.startswith("dtype"))


def cpu_profile() -> Profile:
    S = settingsfiles.Setting
    return Profile("CPU", (
        S("WENMO_DEVICE", "cpu", "run on the CPU (--cpu, or no GPU found)"),
        S("WENMO_MAX_BATCH_TOKENS", "4096", "token budget per forward pass: small batches keep CPU latency low"),
        S("WENMO_MAX_BATCH_SIZE", "32", "texts per forward pass at most"),
        S("WENMO_MAX_LENGTH", "512", "tokens per text: the models' own limit (512 positions)"),
        S("WENMO_LAUNCHER_THRESHOLD_RATIO", THRESHOLD_CPU_RATIO,
          "the launcher restarts the app when its memory (RSS) stays above 80% of this machine's RAM (in a "
          "container: of its memory limit, when lower)"),
    ), ("dtype: fp32 (the plan's choice on a CPU)",))


def gpu_profile(gpus: Sequence[GpuFacts], ds_config: str | Path) -> Profile:
    """Tuned for GPU 0, the one the app runs on (WENMO_DEVICE=cuda:N picks another)."""
    gpu = gpus[0]
    _, tier, tokens, size, length = [t for t in TIERS if gpu.memory_mib >= t[0]][-1]
    dtype, why = planned_dtype(gpu, ds_config)
    notes = [f"dtype: {dtype} (the app's plan: {why}; ds_config.json's precision blocks decide it, not this file)"]
    if len(gpus) > 1:
        notes.append(f"{len(gpus)} GPUs: Wenmo runs on GPU 0; the others: " + "; ".join(g.describe() for g in gpus[1:]))
    S = settingsfiles.Setting
    long_texts = ("tokens per text: the models' own limit (512 positions)" if length >= 512 else
                  f"tokens per text: truncated at {length} so one batch of long texts fits this GPU")
    return Profile(f"{tier}; found {gpu.describe()}", (
        S("WENMO_DEVICE", "cuda", f"run on the first GPU ({gpu.name}); cuda:N picks another"),
        S("WENMO_MAX_BATCH_TOKENS", str(tokens),
          f"token budget per forward pass (longest text x batch size), sized for {gpu.memory_mib} MiB"),
        S("WENMO_MAX_BATCH_SIZE", str(size), "texts per forward pass at most"),
        S("WENMO_MAX_LENGTH", str(length), long_texts),
        S("WENMO_LAUNCHER_THRESHOLD_MIB", str(gpu.memory_mib * THRESHOLD_GPU_PERCENT // 100),
          f"the launcher restarts the app when it holds more than 85% of the GPU's {gpu.memory_mib} MiB "
          "(a leak, before an out-of-memory error)"),
    ), tuple(notes))


def profile_for(gpus: Sequence[GpuFacts], ds_config: str | Path = REPO_ROOT / "ds_config.json") -> Profile:
    return gpu_profile(gpus, ds_config) if gpus else cpu_profile()


def probe_gpus() -> list[GpuFacts]:
    """This machine's GPUs through NVML; [] without a GPU or a driver (or without nvidia-ml-py)."""
    return [GpuFacts(g["name"], int(g["mem_total_mib"]), g["capability"]) for g in hostinfo.gpus()
            if "capability" in g and "error" not in g]


# ---- the command --------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cpu", action="store_true", help="the CPU profile, whatever GPU this machine has")
    which.add_argument("--gpu", action="append", default=[], metavar="NAME,MIB,CC",
                       help=f"profile for this GPU instead of probing (repeat for several): {GPU_FORMAT}")
    p.add_argument("--ds-config", help="the DeepSpeed config whose precision blocks the plan reads "
                   "(default: the checkout's ds_config.json)")
    files = p.add_argument_group("settings files (deploy.sh): the profile merged with wenmo.override.env")
    files.add_argument("--etc", help="directory of wenmo.env and wenmo.override.env: print the settings the "
                       "service will see; with --write or --show, write the files (or print them)")
    files.add_argument("--prefix", help="the installation's prefix (default: the parent of --etc)")
    files.add_argument("--state-dir", help="WENMO_STATE_DIR to generate (default: <prefix>/state)")
    files.add_argument("--set", action="append", default=[], metavar="WENMO_NAME=VALUE",
                       help="a value given to deploy.sh as a flag: goes into wenmo.override.env")
    files.add_argument("--write", action="store_true", help="write the files")
    files.add_argument("--show", action="store_true", help="print what --write would write (a dry run)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app profile",
                                description="Print the serving settings for this machine's GPU (or the CPU).")
    add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    gpus = [] if args.cpu else [GpuFacts.parse(g) for g in args.gpu] if args.gpu else probe_gpus()
    profile = profile_for(gpus, args.ds_config or REPO_ROOT / "ds_config.json")
    if not args.etc:
        print(profile.render(), end="")
        return 0
    etc = Path(args.etc)
    prefix = Path(args.prefix) if args.prefix else etc.parent
    files = settingsfiles.SettingsFiles(etc, prefix, Path(args.state_dir) if args.state_dir else prefix / "state")
    plan = files.plan(profile.title, profile.settings, settingsfiles.parse_assignments(args.set))
    if args.write or args.show:
        files.write(plan, dry_run=args.show)
    else:
        print(f"# profile: {profile.title}")
        print("".join(f"{k}={v}\n" for k, v in plan.effective.items()), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except InputError as e:  # ConfigError included: bad --gpu, a bad value in wenmo.override.env
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code

