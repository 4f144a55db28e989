"""`bench`: every configuration side by side, on the same inputs, in one run.

Families and their configurations (each configuration in its own subprocess, see worker.py):
    embed  GTE        naive · library · wenmo-torch · wenmo-deepspeed (· wenmo-deepspeed-inject on CUDA)
    cross  StructBERT naive · library · wenmo-… (same engines; pairs instead of texts)
    nlu    RexUniNLU  wenmo-… only (there is no plain-transformers RexUniNLU), per task family
The machine's matmul rate is measured in the same run (one subprocess per dtype, at its start and end).
Ratios are computed from rates measured in this run only; the naive baseline runs on a length-stratified
subset and its rate is per input, which is fair because it pads every input to the model maximum.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import REPO_ROOT, Settings
from app.engine.dsconfig import load_ds_config
from app.engine.loading import resolve_model
from app.engine.runtime import _deepspeed_importable, resolve_plan
from app.models.checkpoint import load_tokenizer, read_json
from app.models.encoding import encode_pairs, encode_texts, model_max_length
from app.models.fixtures import build_gte, build_structbert
from app.models.uninlu.fixture import build_rex_uninlu
from bench import workload as wl
from bench.stats import percentile, ratio, summarize

log = logging.getLogger(__name__)

SCHEMA = "wenmo-bench/1"
FAMILIES = ("embed", "cross", "nlu")
KERNEL_INJECT = ("both", "off", "on")  # --kernel-inject: which DeepSpeed configurations run on CUDA
UNITS = {"embed": "texts", "cross": "pairs", "nlu": "texts"}
MODEL_NAMES = {"embed": "gte", "cross": "structbert", "nlu": "rex-uninlu"}
# Targets the issue sets for the CPU (GTE full-size replica, mixed lengths).
TARGET_VS_NAIVE = 10.0
TARGET_VS_LIBRARY = 1.0


@dataclass
class BenchOptions:
    size: str = "tiny"
    seed: int = 0
    texts: int = 512
    naive_texts: int = 64
    pairs: int = 0  # 0: as many as texts
    nlu_texts: int = 8  # per task family
    fixed_tokens: int = 0  # > 0: every text (and pair) exactly this many tokens instead of the mixture
    families: tuple[str, ...] = FAMILIES
    kernel_inject: str = "both"  # CUDA's DeepSpeed configurations: both | off | on (one of KERNEL_INJECT)
    library_batch_size: int = 32
    models_dir: str = ""  # "": <state_dir>/bench-models
    model: str = ""  # a real GTE checkpoint (dir or ModelScope id) instead of the replica
    cross_model: str = ""
    nlu_model: str = ""
    passes: int = 1  # timed passes per configuration process; the fastest counts
    rounds: int = 1  # fresh processes per configuration, round-robin; the fastest round counts
    job_timeout_s: float = 1800.0
    keep_work_dir: bool = False
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    kind: str  # naive | library | wenmo
    engine: str = ""
    kernel_inject: bool | None = None
    dtype: str = ""  # "": the run's --dtype


Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- models ------------------------------------------------------------------------------------------------
def build_fixture(role: str, root: Path, full: bool) -> Path:
    """A replica checkpoint, built once and reused (a full-size set is a few GB and a minute to write)."""
    target = root / MODEL_NAMES[role]
    marker = target / ".bench-complete"
    if marker.exists():
        return target
    if role == "embed":
        build_gte(target, full=full)
    elif role == "cross":
        build_structbert(target, full=full)
    else:
        build_rex_uninlu(target, full=full)
    marker.touch()
    return target


def replica_root(models_dir: str, state_dir: str, size: str) -> Path:
    """Where the replicas of one size live: `--models-dir`, or `<state dir>/bench-models`, then `tiny` or `full`."""
    return Path(models_dir or Path(state_dir).expanduser() / "bench-models") / size


def nlu_unavailable() -> str | None:
    """Why the RexUniNLU family cannot run, or None when it can.

    A probe, not a use (this process never calls the adapter; the worker does): the adapter is imported by name so
    that a failure skips the NLU family with its reason in the report, instead of a traceback from every NLU
    configuration's worker. The presets and the fixture builder are imported at the top (workload, build_fixture)."""
    try:
        importlib.import_module("app.models.uninlu.adapter")
    except Exception as e:  # noqa: BLE001 - any import failure: skip the family, say why
        return f"RexUniNLU adapter not importable ({type(e).__name__}: {e})"
    return None


def model_dirs(opts: BenchOptions, settings: Settings, families: tuple[str, ...], progress: Progress
               ) -> tuple[dict[str, Path], dict[str, str]]:
    root = replica_root(opts.models_dir, settings.state_dir, opts.size)
    given = {"embed": opts.model, "cross": opts.cross_model, "nlu": opts.nlu_model}
    dirs: dict[str, Path] = {}
    what: dict[str, str] = {}
    for role in families:
        if given[role]:
            dirs[role] = resolve_model(given[role], settings.model_dir)
            what[role] = f"checkpoint {given[role]}"
            continue
        progress(f"bench: preparing the {opts.size} {MODEL_NAMES[role]} replica under {root}")
        dirs[role] = build_fixture(role, root, opts.size == "full")
        what[role] = f"{opts.size} replica (random weights)"
    return dirs, what


# ---- configurations ----------------------------------------------------------------------------------------
def wenmo_specs(settings: Settings, on_cuda: bool, deepspeed_ok: bool, kernel_inject: str = "both"
                ) -> tuple[list[ConfigSpec], list[str]]:
    engines = ["torch", "deepspeed"] if settings.engine == "auto" else [settings.engine]
    specs, notes = [], []
    for engine in engines:
        if engine == "deepspeed" and not deepspeed_ok:
            notes.append("wenmo-deepspeed skipped: the deepspeed package cannot be imported")
            continue
        if engine == "deepspeed" and on_cuda:
            if kernel_inject in ("both", "off"):
                specs.append(ConfigSpec("wenmo-deepspeed", "wenmo", "deepspeed", False))
            if kernel_inject in ("both", "on"):
                specs.append(ConfigSpec("wenmo-deepspeed-inject", "wenmo", "deepspeed", True))
            if kernel_inject != "both":
                notes.append(f"--kernel-inject {kernel_inject}: only the DeepSpeed configuration with kernel "
                             f"injection {kernel_inject} ran")
        else:
            specs.append(ConfigSpec(f"wenmo-{engine}", "wenmo", engine, None))
    if not on_cuda:
        notes.append("kernel injection needs CUDA: the inject on/off pair runs only on a GPU")
        if settings.dtype == "auto":
            # The CPU's other dtype: int8 dynamic quantisation, with its agreement against fp32 in the report.
            specs.append(ConfigSpec("wenmo-torch-int8", "wenmo", "torch", None, "int8"))
            notes.append("wenmo-torch-int8: --dtype int8 (dynamic quantisation of the Linear layers); compare its "
                         "agreement with the fp32 library before choosing it")
    return specs, notes


def family_specs(family: str, wenmo: list[ConfigSpec]) -> list[ConfigSpec]:
    if family == "nlu":
        return list(wenmo)
    return [ConfigSpec("naive", "naive"), ConfigSpec("library", "library"), *wenmo]


# ---- subprocess jobs ---------------------------------------------------------------------------------------
def run_job(job: dict[str, Any], work: Path, name: str, timeout_s: float) -> dict[str, Any]:
    job_path = work / f"{name}.job.json"
    result_path = work / f"{name}.result.json"
    log_path = work / f"{name}.log"
    job_path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    with open(log_path, "wb") as logf:
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.worker", str(job_path), str(result_path)],
                                  cwd=REPO_ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout_s:.0f} s (--job-timeout-s)"}
    if result_path.exists():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        if not result.get("ok"):
            result["log_tail"] = _tail(log_path)
        return result
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    if code < 0:
        import signal

        try:
            how = f"signal {signal.Signals(-code).name}"
        except ValueError:
            pass
    return {"ok": False, "error": f"the measurement process died ({how}) without a result",
            "log_tail": _tail(log_path)}


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- derived figures ---------------------------------------------------------------------------------------
def derive(entry: dict[str, Any], raw: dict[str, Any]) -> None:
    """Rates, latency percentiles, FLOP/s and memory from one worker result, into `entry` (the fraction of
    the matmul rate comes later, from `apply_matmul_rate`, once the run's last yardstick is measured)."""
    seconds = raw["seconds"]
    entry["items"] = raw["items"]
    entry["seconds"] = seconds
    entry["load_s"] = raw.get("load_s")
    entry["items_per_s"] = raw["items"] / seconds if seconds > 0 else None
    entry["plan"] = raw.get("plan", {})
    entry["dtype"] = entry["plan"].get("dtype")
    mem = raw.get("memory", {})
    entry["memory"] = mem
    entry["peak_rss_mib"] = mem.get("lifetime_peak_rss_mib")
    entry["run_peak_rss_mib"] = mem.get("run_peak_rss_mib")
    entry["gpu_max_allocated_mib"] = mem.get("max_allocated_mib")
    entry["gpu_nvml_mib"] = mem.get("nvml_process_mib") or mem.get("nvml_device_used_mib")
    if "batch_ms" in raw:
        b = raw["batch_ms"]
        entry["batches"] = len(b)
        entry["mean_batch_rows"] = sum(raw["batch_rows"]) / len(b) if b else None
        entry["latency_p50_ms"] = percentile(b, 50)
        entry["latency_p95_ms"] = percentile(b, 95)
        entry["latency_unit"] = "per forward (batch)"
        entry["real_tokens"] = raw["real_tokens"]
        entry["padded_tokens"] = raw["padded_tokens"]
        entry["tokens_per_s"] = raw["real_tokens"] / seconds if seconds > 0 else None
        entry["padding_efficiency"] = ratio(raw["real_tokens"], raw["padded_tokens"])
        entry["useful_flops"] = raw["useful_flops"]
        entry["executed_flops"] = raw["executed_flops"]
        entry["flops_per_s"] = raw["useful_flops"] / seconds if seconds > 0 else None
        entry["executed_flops_per_s"] = raw["executed_flops"] / seconds if seconds > 0 else None
        # Where the wall time went: inside the forwards (CUDA-synchronized) or around them (tokenizing, padding,
        # copying, Python). On an H200 at 128 tokens the run's FLOP/s was 13 % of the matmul rate; this says how
        # much of that gap is the host's.
        entry["forward_seconds"] = sum(b) / 1000
        entry["forward_share"] = ratio(entry["forward_seconds"], seconds)
        entry["forward_flops_per_s"] = ratio(raw["useful_flops"], entry["forward_seconds"])
    if "item_ms" in raw:
        per: dict[str, list[float]] = {}
        for fam, ms in zip(raw["item_family"], raw["item_ms"], strict=True):
            per.setdefault(fam, []).append(ms)
        entry["latency_p50_ms"] = percentile(raw["item_ms"], 50)
        entry["latency_p95_ms"] = percentile(raw["item_ms"], 95)
        entry["latency_unit"] = "per request"
        entry["task_families"] = {
            fam: {"items": len(ms), "items_per_s": len(ms) / (sum(ms) / 1000) if sum(ms) > 0 else None,
                  "latency_p50_ms": percentile(ms, 50), "latency_p95_ms": percentile(ms, 95)}
            for fam, ms in per.items()
        }
        entry["items_with_output"] = sum(1 for n in raw.get("item_outputs", []) if n)
        windows: dict[str, list[int]] = {}
        for fam, w in zip(raw["item_family"], raw.get("item_windows") or [0] * len(raw["item_family"]),
                          strict=True):
            windows.setdefault(fam, []).append(w)
        for fam, ws in windows.items():
            entry["task_families"][fam]["windows_per_request"] = sum(ws) / len(ws) if ws else None


def apply_matmul_rate(entry: dict[str, Any], matmul: dict[str, Any]) -> None:
    if entry.get("flops_per_s") is None:
        return
    rate = (matmul.get(entry["dtype"]) or {}).get("flops_per_s")
    entry["matmul_fraction"] = ratio(entry["flops_per_s"], rate)
    entry["executed_matmul_fraction"] = ratio(entry["executed_flops_per_s"], rate)
    entry["forward_matmul_fraction"] = ratio(entry.get("forward_flops_per_s"), rate)


def best_matmul(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """Per dtype, the faster of the two measurements (the run's start and end): the yardstick is what the
    machine can attain, and a burst of load from its other users during one of them must not lower it."""
    best = {}
    for dtype in set(first) | set(last):
        runs = [r for r in (first.get(dtype), last.get(dtype)) if r and r.get("ok")]
        if runs:
            best[dtype] = {**max(runs, key=lambda r: r["flops_per_s"]),
                           "measurements_flops_per_s": [r["flops_per_s"] for r in runs]}
        else:
            best[dtype] = first.get(dtype) or last.get(dtype)
    return best


def add_ratios(configs: list[dict[str, Any]]) -> None:
    by = {c["name"]: c for c in configs if c.get("ok")}
    for c in configs:
        if not c.get("ok"):
            continue
        for base in ("naive", "library"):
            ref = by.get(base)
            c[f"speedup_vs_{base}"] = ratio(c.get("items_per_s"), ref.get("items_per_s")) if ref else None


def padding_ceiling(configs: list[dict[str, Any]]) -> float | None:
    """The speedup over naive that removing all padding alone would give at naive's own FLOP/s: naive's
    executed FLOPs per input / the useful FLOPs per input of the whole workload. Batching can beat it
    only by running the hardware more efficiently than a single 512-token forward already does."""
    by = {c["name"]: c for c in configs if c.get("ok") and c.get("executed_flops")}
    naive = by.get("naive")
    full = next((c for c in by.values() if c["kind"] != "naive"), None)
    if naive is None or full is None:
        return None
    return ratio(naive["executed_flops"] / naive["items"], full["useful_flops"] / full["items"])


def add_agreement(configs: list[dict[str, Any]], probes: dict[str, dict[str, Any]]) -> None:
    """Largest absolute difference of the probe outputs against the library baseline (or naive)."""
    ref_name = "library" if "library" in probes else ("naive" if "naive" in probes else None)
    if ref_name is None:
        return
    ref = probes[ref_name]
    for c in configs:
        mine = probes.get(c["name"])
        if not mine or c["name"] == ref_name:
            continue
        diffs, cosines = [], []
        for key, val in mine.items():
            if key not in ref:
                continue
            a = val if isinstance(val, list) else [val]
            b = ref[key] if isinstance(ref[key], list) else [ref[key]]
            diffs.extend(abs(x - y) for x, y in zip(a, b, strict=False))
            if isinstance(val, list):
                cosines.append(_cosine(a, b))
        c["agreement"] = {"versus": ref_name, "probes": len(mine), "max_abs_diff": max(diffs) if diffs else None,
                          "min_cosine": min(cosines) if cosines else None}


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = sum(x * x for x in a) ** 0.5, sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


def checks(families: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """The issue's CPU targets for the GTE family, per Wenmo configuration, as pass/fail with the figures."""
    embed = families.get("embed") or {}
    configs = {c["name"]: c for c in embed.get("configs", []) if c.get("ok")}
    lib = configs.get("library")
    out = []
    for name, c in configs.items():
        if not name.startswith("wenmo"):
            continue
        vs_naive = c.get("speedup_vs_naive")
        vs_lib = c.get("speedup_vs_library")
        rss, lib_rss = c.get("peak_rss_mib"), (lib or {}).get("peak_rss_mib")
        out.append({"config": name, "device": device, "target": f"texts/s ≥ {TARGET_VS_NAIVE:g}× naive",
                     "value": vs_naive, "pass": vs_naive is not None and vs_naive >= TARGET_VS_NAIVE})
        out.append({"config": name, "device": device, "target": f"texts/s ≥ {TARGET_VS_LIBRARY:g}× library",
                     "value": vs_lib, "pass": vs_lib is not None and vs_lib >= TARGET_VS_LIBRARY})
        if device == "cpu":
            ok = rss is not None and lib_rss is not None and rss <= lib_rss
            out.append({"config": name, "device": device, "target": "peak RSS ≤ library (whole process)",
                        "value": ratio(rss, lib_rss), "pass": ok})
    return out


# ---- machine -----------------------------------------------------------------------------------------------
def machine_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__, "transformers": transformers.__version__,
                            "platform": platform.platform()}
    try:
        from importlib.metadata import version

        info["deepspeed"] = version("deepspeed")
    except Exception:  # noqa: BLE001
        info["deepspeed"] = None
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def token_stats(lengths: list[int], truncated: list[bool]) -> dict[str, Any]:
    s = summarize(lengths)
    s["truncated"] = sum(truncated)
    s["total"] = sum(lengths)
    return s


# ---- the run -----------------------------------------------------------------------------------------------
def run_suite(opts: BenchOptions, settings: Settings, progress: Progress = _stderr,
              family_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The bench's report; `family_done(report so far)` after each family, so a run stopped at a time limit
    (a GPU lease's step) still leaves the families it finished."""
    families = tuple(f for f in FAMILIES if f in opts.families)
    ds = load_ds_config(settings.ds_config)
    base_plan = resolve_plan(settings.device, settings.dtype, "torch", ds)
    device, wenmo_dtype = base_plan.device, base_plan.dtype
    on_cuda = base_plan.is_cuda
    specs, notes = wenmo_specs(settings, on_cuda, _deepspeed_importable(), opts.kernel_inject)

    skipped: dict[str, str] = {}
    if "nlu" in families:
        why = nlu_unavailable()
        if why:
            skipped["nlu"] = why
    dirs, what = model_dirs(opts, settings, tuple(f for f in families if f not in skipped), progress)

    text_bands = wl.fixed_bands(opts.fixed_tokens) if opts.fixed_tokens else wl.BANDS
    texts, bands = wl.make_texts(opts.texts, opts.seed, text_bands)
    first, second = wl.make_pairs(opts.pairs or opts.texts, opts.seed, opts.fixed_tokens)
    nlu_items = wl.nlu_items(opts.nlu_texts) if "nlu" in dirs else []
    if "nlu" in dirs and not nlu_items:
        skipped["nlu"] = "no RexUniNLU presets to run"
        dirs.pop("nlu")

    work = Path(tempfile.mkdtemp(prefix="wenmo-bench-"))
    (work / "workload.json").write_text(json.dumps(
        {"texts": texts, "pairs": list(zip(first, second, strict=True)), "nlu": nlu_items}, ensure_ascii=False),
        encoding="utf-8")

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": opts.command,
        "machine": machine_info(device),
        "options": dataclasses.asdict(opts),
        "plan": {"device": device, "wenmo_dtype": wenmo_dtype, "baseline_dtype": "fp32",
                 "configs": [s.name for s in specs], "max_batch_tokens": settings.max_batch_tokens,
                 "max_batch_size": settings.max_batch_size, "min_batch_fill": settings.min_batch_fill,
                 "cudnn_attention": settings.cudnn_attention, "length_buckets": settings.length_buckets,
                 "library_batch_size": opts.library_batch_size,
                 "ds_config": settings.ds_config},
        "workload": {"seed": opts.seed, "distribution": wl.describe(text_bands),
                     "bands": wl.bands_as_dicts(text_bands), "fixed_tokens": opts.fixed_tokens,
                     "pair_passages": (f"every pair {opts.fixed_tokens} tokens" if opts.fixed_tokens
                                       else wl.describe(wl.PAIR_SECOND_BANDS))},
        "matmul": {},
        "families": {},
        "notes": list(notes),
    }
    report["options"]["families"] = list(families)

    # Token counts as each model sees them (its own tokenizer and maximum length).
    subsets: dict[str, list[int]] = {}
    if "embed" in dirs:
        tok = load_tokenizer(dirs["embed"])
        enc = encode_texts(tok, texts, model_max_length(dirs["embed"], read_json(dirs["embed"], "config.json"),
                                                        settings.max_length))
        subsets["embed"] = wl.spread_subset(enc.lengths, opts.naive_texts)
        report["workload"]["texts"] = token_stats(enc.lengths, enc.truncated)
        report["workload"]["texts"]["bands"] = {b.name: bands.count(b.name) for b in text_bands}
        sub = subsets["embed"]
        report["workload"]["naive_subset"] = token_stats([enc.lengths[i] for i in sub],
                                                         [enc.truncated[i] for i in sub])
    if "cross" in dirs:
        tok = load_tokenizer(dirs["cross"])
        enc = encode_pairs(tok, first, second, model_max_length(dirs["cross"], read_json(dirs["cross"], "config.json"),
                                                                 settings.max_length))
        subsets["cross"] = wl.spread_subset(enc.lengths, opts.naive_texts)
        report["workload"]["pairs"] = token_stats(enc.lengths, enc.truncated)
        sub = subsets["cross"]
        report["workload"]["naive_pairs_subset"] = token_stats([enc.lengths[i] for i in sub],
                                                               [enc.truncated[i] for i in sub])
    if nlu_items:
        report["workload"]["nlu"] = {"per_family": opts.nlu_texts, "requests": len(nlu_items),
                                     "families": sorted({i["family"] for i in nlu_items}),
                                     "source": "the presets' own example texts and schemas, cycled"}

    # The yardstick, in this run, on this device, per dtype used.
    matmul_dtypes = {"fp32", wenmo_dtype} | {s.dtype for s in specs if s.dtype}
    total_jobs = 2 * len(matmul_dtypes) + opts.rounds * sum(len(family_specs(f, specs)) for f in dirs)
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        progress(f"bench: [{done}/{total_jobs}] {label}")

    def measure_matmul(when: str) -> dict[str, Any]:
        out = {}
        for dtype in sorted(matmul_dtypes):
            step(f"matmul rate {device} {dtype} ({when})")
            res = run_job({"kind": "matmul", "device": device, "dtype": dtype}, work, f"matmul-{dtype}-{when}",
                          opts.job_timeout_s)
            out[dtype] = res if res.get("ok") else {"ok": False, "error": res.get("error")}
        return out

    first_matmul = measure_matmul("start")

    for family in families:
        if family in skipped:
            report["families"][family] = {"unit": UNITS[family], "skipped": skipped[family], "configs": []}
            continue
        indices_all = list(range(len({"embed": texts, "cross": first, "nlu": nlu_items}[family])))
        naive_idx = subsets.get(family, indices_all)
        probe = naive_idx  # the stratified subset every configuration runs: agreement over all lengths
        fam_entry: dict[str, Any] = {"unit": UNITS[family], "model_dir": str(dirs[family]), "model": what[family],
                                     "configs": []}
        config = read_json(dirs[family], "config.json")
        fam_entry["architecture"] = {k: config.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                                "num_attention_heads", "intermediate_size",
                                                                "vocab_size", "max_position_embeddings")}
        probes: dict[str, Any] = {}
        fam_specs = family_specs(family, specs)
        # Rounds go round-robin over the configurations (naive, library, wenmo…, then again), so a burst of
        # load from the machine's other users hits one round of every configuration alike; the fastest
        # round of each configuration counts, and every round's time is kept.
        best: dict[str, dict[str, Any]] = {}
        rounds: dict[str, list[float | None]] = {s.name: [] for s in fam_specs}
        process_s: dict[str, float] = {}
        peaks: dict[str, float] = {}  # memory does not get better by picking a round: the worst one counts
        for r in range(opts.rounds):
            for spec in fam_specs:
                step(f"{family} {spec.name}" + (f" (round {r + 1}/{opts.rounds})" if opts.rounds > 1 else ""))
                indices = naive_idx if spec.kind == "naive" else indices_all
                job = {"kind": spec.kind, "family": family, "model_dir": str(dirs[family]), "device": device,
                       "dtype": spec.dtype or settings.dtype, "engine": spec.engine,
                       "ds_config": settings.ds_config, "min_batch_fill": settings.min_batch_fill,
                       "cudnn_attention": settings.cudnn_attention, "length_buckets": settings.length_buckets,
                       "kernel_inject": spec.kernel_inject, "max_length": settings.max_length,
                       "max_batch_tokens": settings.max_batch_tokens, "max_batch_size": settings.max_batch_size,
                       "library_batch_size": opts.library_batch_size, "workload": str(work / "workload.json"),
                       "indices": indices, "probe": probe, "warmup": 2, "passes": opts.passes}
                started = time.perf_counter()
                raw = run_job(job, work, f"{family}-{spec.name}-r{r + 1}", opts.job_timeout_s)
                process_s[spec.name] = process_s.get(spec.name, 0.0) + time.perf_counter() - started
                rounds[spec.name].append(raw.get("seconds") if raw.get("ok") else None)
                if raw.get("ok"):
                    peaks[spec.name] = max(peaks.get(spec.name, 0.0), raw["memory"]["lifetime_peak_rss_mib"])
                prev = best.get(spec.name)
                if prev is None or (raw.get("ok") and (not prev.get("ok") or raw["seconds"] < prev["seconds"])):
                    best[spec.name] = raw
        for spec in fam_specs:
            raw = best[spec.name]
            indices = naive_idx if spec.kind == "naive" else indices_all
            entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "engine": spec.engine or "transformers",
                                     "kernel_inject": spec.kernel_inject, "subset": spec.kind == "naive"
                                     and len(indices) < len(indices_all), "ok": bool(raw.get("ok"))}
            entry["process_s"] = process_s[spec.name]
            entry["round_seconds"] = rounds[spec.name]
            if raw.get("ok"):
                derive(entry, raw)
                entry["peak_rss_mib"] = peaks[spec.name]
                if raw.get("probe"):
                    probes[spec.name] = raw["probe"]
            else:
                entry["error"] = raw.get("error")
                entry["log_tail"] = raw.get("log_tail", "")
                progress(f"bench: {family} {spec.name} failed: {entry['error']}")
            fam_entry["configs"].append(entry)
        add_ratios(fam_entry["configs"])
        add_agreement(fam_entry["configs"], probes)
        fam_entry["padding_ceiling_vs_naive"] = padding_ceiling(fam_entry["configs"])
        report["families"][family] = fam_entry
        if family_done is not None:
            family_done(report)

    report["matmul"] = best_matmul(first_matmul, measure_matmul("end"))
    mm = {k: v for k, v in report["matmul"].items() if v.get("ok")}
    for fam in report["families"].values():
        for c in fam.get("configs", []):
            if c.get("ok"):
                apply_matmul_rate(c, mm)
    # The targets are stated for the mixed-length workload; a fixed-length run does not check them.
    report["checks"] = [] if opts.fixed_tokens else checks(report["families"], device)
    if opts.fixed_tokens:
        report["notes"].append(f"--fixed-tokens {opts.fixed_tokens}: the mixed-length targets are not checked")
    if any(c.get("subset") for f in report["families"].values() for c in f.get("configs", [])):
        report["notes"].append(
            "naive runs on a length-stratified subset (--naive-texts) and its rates are per input; it pads every "
            "input to the model maximum, so its time per input does not depend on the input's length")
    report["notes"].append("texts/s and tokens/s: wall time of the whole run (tokenization, padding, forwards, "
                           "pooling, copying out); latency: per forward, CUDA-synchronized")
    report["notes"].append("peak RSS: whole measurement process (load + run; getrusage); run peak: "
                           "after load and warm-up (VmHWM reset); one fresh process per configuration")
    if opts.rounds > 1:
        report["notes"].append(f"{opts.rounds} rounds, round-robin over the configurations, each in a fresh process; "
                               "rates are from each configuration's fastest round (round_seconds has them all), "
                               "peak RSS is the largest of its rounds")
    report["notes"].append("FLOP/s: matmul FLOPs of the real tokens (config + token counts) / wall time, as a "
                           "fraction of the measured matmul rate of the configuration's dtype (measured at the "
                           "start and the end of the run; the faster counts)")
    if opts.keep_work_dir:
        report["work_dir"] = str(work)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    report["ok"] = all(c.get("ok") for f in report["families"].values() for c in f.get("configs", []))
    return report
