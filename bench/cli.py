"""The `bench`, `loadtest` and `bench-batching` subcommands: their flags and entry points, for app/cli.py to wire in.

    from bench.cli import add_batching_parser, add_bench_parser, add_loadtest_parser, run_bench, …
    add_bench_parser(sub, common); add_loadtest_parser(sub, common); add_batching_parser(sub, common)
    COMMANDS["bench"] = run_bench; COMMANDS["loadtest"] = run_loadtest; COMMANDS["bench-batching"] = run_batching

Flag destinations never collide with Settings field names, so `Settings.replace(**vars(args))` ignores
them. Heavy imports (torch, httpx, matplotlib) happen inside the run functions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.argtypes import positive_float, positive_int
from app.config import FIELD_NAMES, Settings, env_name
from app.errors import InputError


def _names(choices: tuple[str, ...]):  # noqa: ANN202
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)} (comma-separated)")
        return names

    return parse


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give user counts such as 1,2,4,8") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: user counts must be ≥ 1")
    return values


def add_bench_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    from bench.suite import FAMILIES, KERNEL_INJECT

    b = sub.add_parser(
        "bench", parents=[common],
        help="engine throughput, latency and memory: naive vs library vs Wenmo, side by side",
        description="Measure texts/s, tokens/s, per-forward latency, peak memory and FLOP/s of the naive "
                    "baseline, plain transformers and Wenmo's engine on the same seeded Chinese workload. "
                    "--engine auto runs every engine; --dtype sets Wenmo's dtype (baselines are fp32).")
    b.add_argument("--size", choices=("tiny", "full"), default="tiny",
                   help="tiny checkpoints (quick check) or full-size replicas (real architectures, random weights)")
    b.add_argument("--model", dest="bench_embed_model", metavar="DIR|ID", default="",
                   help="a real GTE checkpoint (directory or ModelScope id) instead of the replica")
    b.add_argument("--cross-model", dest="bench_cross_model", metavar="DIR|ID", default="",
                   help="a real StructBERT cross-encoder checkpoint instead of the replica")
    b.add_argument("--nlu-model", dest="bench_nlu_model", metavar="DIR|ID", default="",
                   help="a real RexUniNLU checkpoint instead of the replica")
    b.add_argument("--families", metavar="LIST", type=_names(FAMILIES), default=FAMILIES,
                   help="which model families to measure (default: embed,cross,nlu)")
    b.add_argument("--texts", dest="bench_texts", metavar="N", type=positive_int, default=512,
                   help="texts in the workload (default 512)")
    b.add_argument("--pairs", dest="bench_pairs", metavar="N", type=int, default=0,
                   help="cross-encoder pairs (default: as many as --texts)")
    b.add_argument("--naive-texts", dest="bench_naive_texts", metavar="N", type=positive_int, default=64,
                   help="inputs the naive baseline runs (a length-stratified subset; default 64)")
    b.add_argument("--nlu-texts", dest="bench_nlu_texts", metavar="N", type=positive_int, default=8,
                   help="RexUniNLU requests per task family (default 8)")
    b.add_argument("--seed", dest="bench_seed", metavar="N", type=int, default=0, help="workload seed (default 0)")
    b.add_argument("--fixed-tokens", dest="bench_fixed_tokens", metavar="N", type=positive_int, default=0,
                   help="every text (and pair) exactly N tokens instead of the mixed-length workload, e.g. 128 "
                        "for a figure 'at 128-token inputs'")
    b.add_argument("--library-batch-size", type=positive_int, default=32,
                   help="fixed batch size of the library baseline (default 32)")
    b.add_argument("--models-dir", dest="bench_models_dir", metavar="DIR", default="",
                   help="where replicas are built and kept (default: <state dir>/bench-models)")
    b.add_argument("--kernel-inject", dest="bench_kernel_inject", choices=KERNEL_INJECT, default="both",
                   help="CUDA: which DeepSpeed configurations run — both (wenmo-deepspeed with kernel injection "
                        "off and wenmo-deepspeed-inject with it on), off, or on. The first injected run builds "
                        "DeepSpeed's inference op with nvcc (minutes), so a short run may leave it out (default both)")
    b.add_argument("--rounds", type=positive_int, default=1,
                   help="run every configuration this many times, round-robin, each in a fresh process; the "
                        "fastest round counts (default 1; 2–3 on a machine shared with others)")
    b.add_argument("--passes", type=positive_int, default=1,
                   help="timed passes over the inputs inside each process; the fastest counts (default 1)")
    b.add_argument("--job-timeout-s", type=positive_float, default=1800.0,
                   help="time limit per configuration's process (default 1800)")
    b.add_argument("--json", dest="json_path", metavar="PATH", help="write the full results as JSON to this file")
    b.add_argument("--plot", dest="plot_path", metavar="PATH", help="write a PNG chart to this file")
    b.add_argument("--keep-work-dir", action="store_true", help="keep the per-configuration logs and results")
    return b


def add_loadtest_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    from bench.loadtest import DEFAULT_MIX, LoadOptions

    d = LoadOptions()
    t = sub.add_parser(
        "loadtest", parents=[common],
        help="load a running server: baseline, ramp, soak, mixed; safe concurrency and overhead",
        description="Concurrent users against a running Wenmo server (loopback only unless --allow-remote). "
                    "Credentials come from WENMO_AUTH=user:password, never from a flag.")
    t.add_argument("--url", default=d.url, help=f"server base URL (default {d.url})")
    t.add_argument("--allow-remote", action="store_true", help="allow a non-loopback URL")
    t.add_argument("--stages", metavar="LIST", type=_names(("baseline", "ramp", "soak", "mixed")), default=d.stages,
                   help="stages to run, in order (default: baseline,ramp,soak,mixed)")
    t.add_argument("--users", type=positive_int, default=d.users, help=f"most concurrent users (default {d.users})")
    t.add_argument("--ramp-steps", metavar="LIST", type=_ints, default=(),
                   help="user counts of the ramp (default 1,2,4,… up to --users)")
    t.add_argument("--step-s", type=positive_float, default=d.step_s, help=f"seconds per ramp step ({d.step_s:g})")
    t.add_argument("--step-requests", type=positive_int, default=d.step_requests,
                   help=f"request cap per ramp step ({d.step_requests})")
    t.add_argument("--baseline-requests", type=positive_int, default=d.baseline_requests,
                   help=f"requests of the 1-user baseline ({d.baseline_requests})")
    t.add_argument("--baseline-s", type=positive_float, default=d.baseline_s,
                   help=f"time cap of the baseline ({d.baseline_s:g} s)")
    t.add_argument("--soak-users", type=int, default=0, help="users of soak and mixed (default: the safe concurrency)")
    t.add_argument("--soak-s", type=positive_float, default=d.soak_s, help=f"soak duration ({d.soak_s:g} s)")
    t.add_argument("--soak-requests", type=positive_int, default=d.soak_requests, help="request cap of the soak")
    add_soak_arguments(t, d)
    t.add_argument("--mixed-s", type=positive_float, default=d.mixed_s, help=f"mixed stage duration ({d.mixed_s:g} s)")
    t.add_argument("--mixed-requests", type=positive_int, default=d.mixed_requests, help="request cap of mixed")
    t.add_argument("--mix", default=DEFAULT_MIX, help=f"request mix of the mixed stage (default {DEFAULT_MIX}; "
                   "kinds: vectors, similarity, rerank, nlu, ui, metrics, badlogin)")
    t.add_argument("--metrics-interval-s", type=positive_float, default=d.metrics_interval_s,
                   help=f"GET /metrics every this many seconds during the soak ({d.metrics_interval_s:g})")
    t.add_argument("--p95-target-ms", type=positive_float, default=d.p95_target_ms,
                   help=f"p95 latency a step must stay within to count as safe ({d.p95_target_ms:g} ms)")
    t.add_argument("--request-timeout-s", dest="load_request_timeout_s", type=positive_float,
                   default=d.request_timeout_s, help=f"per-request timeout ({d.request_timeout_s:g} s)")
    t.add_argument("--ready-timeout-s", type=positive_float, default=d.ready_timeout_s,
                   help=f"how long to wait for GET /readyz ({d.ready_timeout_s:g} s)")
    t.add_argument("--embedding-model-name", dest="request_model", metavar="NAME", default="",
                   help="`model` field of embeddings requests (default: the configured embed model)")
    t.add_argument("--seed", dest="load_seed", metavar="N", type=int, default=0,
                   help="request workload seed (default 0)")
    t.add_argument("--json", dest="json_path", metavar="PATH", help="write the full results as JSON to this file")
    t.add_argument("--plot", dest="plot_path", metavar="PATH", help="write a PNG chart to this file")
    return t


def add_soak_arguments(t: argparse.ArgumentParser, d: Any) -> None:  # noqa: ANN401
    """The soak's own flags, shared by `loadtest` and `soak`."""
    from bench.loadtest import KINDS

    t.add_argument("--soak-mix", default=d.soak_mix, help=f"request mix of the soak (default {d.soak_mix}; kinds: "
                   f"{', '.join(KINDS)})")
    t.add_argument("--soak-warmup-s", type=float, default=d.soak_warmup_s,
                   help=f"seconds of the soak left out of the memory fit (default {d.soak_warmup_s:g}, at most half "
                        "the soak)")
    t.add_argument("--memory-budget-mib-per-day", type=positive_float, default=d.memory_budget_mib_per_day,
                   help="the soak passes when every memory gauge, extrapolated to 24 h at the soak's rate, grows "
                        f"less than this (default {d.memory_budget_mib_per_day:g} MiB)")
    t.add_argument("--settle-every-s", type=float, default=d.settle_every_s,
                   help="pause the users this often for a settled memory sample (nothing in flight), the samples "
                        f"the verdict fits (default {d.settle_every_s:g} s; 0: never, fit the samples under load)")
    t.add_argument("--settle-s", type=positive_float, default=d.settle_s,
                   help=f"quiet seconds before each settled sample (default {d.settle_s:g})")


def soak_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"soak_mix": args.soak_mix, "soak_warmup_s": max(0.0, args.soak_warmup_s),
            "memory_budget_mib_per_day": args.memory_budget_mib_per_day,
            "settle_every_s": max(0.0, args.settle_every_s), "settle_s": args.settle_s}


def add_batching_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    from bench.batching import POOL_TEXTS, BatchingOptions

    d = BatchingOptions()
    t = sub.add_parser(
        "bench-batching", parents=[common],
        help="batching across requests on vs off: two real servers, the same concurrent short-text load",
        description="Start `python -m app serve` twice, one after the other, with WENMO_BATCH_ACROSS_REQUESTS=on "
                    "and off, and put the same load on each: --users closed-loop users each sending --requests "
                    "single short texts (4–24 characters) to /v1/embeddings. Prints texts/s, p50/p95/p99, errors "
                    "and the lowest cosine between vectors under load and single requests to the idle server, "
                    "side by side with the ratios, and the issue's targets. Settings flags given here and WENMO_* "
                    "variables reach both servers alike; credentials from WENMO_AUTH (a random one when unset).")
    t.add_argument("--size", choices=("tiny", "full"), default=d.size,
                   help="tiny test checkpoints (quick check) or the full-size GTE replica (BERT-large, random weights)")
    t.add_argument("--model", dest="bench_embed_model", metavar="DIR|ID", default="",
                   help="a real GTE checkpoint (directory or ModelScope id) instead of the replica")
    t.add_argument("--models-dir", dest="bench_models_dir", metavar="DIR", default="",
                   help="where replicas are built and kept (default: <state dir>/bench-models)")
    t.add_argument("--users", type=positive_int, default=d.users, help=f"concurrent users (default {d.users})")
    t.add_argument("--requests", dest="batching_requests", metavar="N", type=positive_int, default=d.requests,
                   help=f"timed requests per user, one text each (default {d.requests})")
    t.add_argument("--warmup", dest="batching_warmup", metavar="N", type=int, default=d.warmup,
                   help=f"untimed requests per user before the timed ones (default {d.warmup})")
    t.add_argument("--compare-texts", metavar="N", type=positive_int, default=d.compare_texts,
                   help=f"texts whose vectors under load are compared with single requests to the idle server "
                        f"(1–{POOL_TEXTS}, default {d.compare_texts})")
    t.add_argument("--rounds", type=positive_int, default=d.rounds,
                   help="run both servers this many times, alternating which goes first; per mode the round with "
                        "the most texts/s counts (default 1)")
    t.add_argument("--seed", dest="bench_seed", metavar="N", type=int, default=d.seed, help="text seed (default 0)")
    # Not --request-timeout-s: that is the server setting (Settings.request_timeout_s), which reaches the servers.
    t.add_argument("--client-timeout-s", type=positive_float, default=d.client_timeout_s,
                   help=f"how long a user waits for one answer before counting an error ({d.client_timeout_s:g} s)")
    t.add_argument("--ready-timeout-s", type=positive_float, default=d.ready_timeout_s,
                   help=f"how long each server may take to load and answer GET /readyz ({d.ready_timeout_s:g} s)")
    t.add_argument("--check", action="store_true",
                   help="exit status 1 when a target is missed (default: report it, exit 0)")
    t.add_argument("--json", dest="json_path", metavar="PATH", help="write the full results as JSON to this file")
    t.add_argument("--keep-work-dir", action="store_true", help="keep the servers' logs")
    return t


def add_soak_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    from bench.soak import SoakOptions

    d = SoakOptions()
    t = sub.add_parser(
        "soak", parents=[common],
        help="start a server and soak it with every route: memory slope per 1k requests, 24 h extrapolation, "
             "and (--trace-heap) what grew, by allocation site",
        description="Start `python -m app serve` (--demo: the tiny offline models) on a free loopback port with "
                    "its own credentials, put --soak-users closed-loop users on it for --soak-s seconds with "
                    "--soak-mix (every route by default, wrong logins included), read the memory gauges from "
                    "/metrics, and judge their slope per 1,000 requests after the warm-up, extrapolated to 24 "
                    "hours at the soak's rate, against --memory-budget-mib-per-day. Settings flags given here "
                    "and WENMO_* variables reach the server.")
    t.add_argument("--soak-users", type=positive_int, default=d.users, help=f"concurrent users (default {d.users})")
    t.add_argument("--soak-s", type=positive_float, default=d.soak_s, help=f"soak duration ({d.soak_s:g} s)")
    t.add_argument("--soak-requests", type=positive_int, default=d.soak_requests,
                   help="request cap (default: none; the duration ends it)")
    add_soak_arguments(t, d)
    t.add_argument("--metrics-interval-s", type=positive_float, default=d.metrics_interval_s,
                   help=f"GET /metrics every this many seconds ({d.metrics_interval_s:g})")
    t.add_argument("--trace-heap", action="store_true",
                   help="trace the server's Python allocations (several times slower) and report the allocation "
                        "sites that grew between the end of the warm-up and the end")
    t.add_argument("--top-sites", type=positive_int, default=d.top_sites,
                   help=f"allocation sites to report with --trace-heap (default {d.top_sites})")
    t.add_argument("--ready-timeout-s", type=positive_float, default=d.ready_timeout_s,
                   help=f"how long the server may take to load and answer GET /readyz ({d.ready_timeout_s:g} s)")
    t.add_argument("--check", action="store_true",
                   help="exit status 1 when the verdict fails or a request failed (default: report it, exit 0)")
    t.add_argument("--json", dest="json_path", metavar="PATH", help="write the full results as JSON to this file")
    t.add_argument("--plot", dest="plot_path", metavar="PATH", help="write a PNG chart of the memory to this file")
    t.add_argument("--keep-work-dir", action="store_true", help="keep the server's log (kept anyway with --trace-heap)")
    return t


def run_soak(args: argparse.Namespace, settings: Settings) -> int:
    from bench.report import soak_text
    from bench.soak import SoakOptions, run

    opts = SoakOptions(demo=bool(getattr(args, "demo", False)), users=args.soak_users, soak_s=args.soak_s,
                       soak_requests=args.soak_requests, metrics_interval_s=args.metrics_interval_s,
                       trace_heap=args.trace_heap, top_sites=args.top_sites, ready_timeout_s=args.ready_timeout_s,
                       keep_work_dir=args.keep_work_dir, command=list(sys.argv), **soak_options(args))
    report = run(opts, given_settings_env(args))
    publish(args, report, soak_text(report), "plot_soak")
    return 1 if args.check and not report["pass"] else 0


def publish(args: argparse.Namespace, report: dict[str, Any], text: str, plot: str | None = None) -> None:
    """Print the table; write the JSON and the chart (bench/plot.py's function `plot`) where asked."""
    print(text, flush=True)
    if args.json_path:
        _write_json(args.json_path, report)
    if plot is not None and args.plot_path:
        from bench import plot as charts

        getattr(charts, plot)(report, args.plot_path)


def _write_json(path: str, data: dict[str, Any]) -> None:
    """Whole or not at all (written beside, then renamed): a run stopped while writing leaves the last whole one."""
    part = Path(f"{path}.part")
    part.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    part.replace(path)


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.report import bench_text
    from bench.suite import BenchOptions, run_suite

    if args.bench_pairs < 0:
        raise InputError("--pairs must be ≥ 0 (0: as many as --texts)")
    opts = BenchOptions(
        size=args.size, seed=args.bench_seed, texts=args.bench_texts, naive_texts=args.bench_naive_texts,
        pairs=args.bench_pairs, nlu_texts=args.bench_nlu_texts, families=tuple(args.families),
        fixed_tokens=args.bench_fixed_tokens, kernel_inject=args.bench_kernel_inject,
        library_batch_size=args.library_batch_size, models_dir=args.bench_models_dir,
        model=args.bench_embed_model, cross_model=args.bench_cross_model, nlu_model=args.bench_nlu_model,
        passes=args.passes, rounds=args.rounds, job_timeout_s=args.job_timeout_s, keep_work_dir=args.keep_work_dir,
        command=list(sys.argv))
    def family_done(partial: dict[str, Any]) -> None:  # replaced by the whole report at the end
        if args.json_path:
            done = list(partial["families"])
            _write_json(args.json_path, {**partial, "partial": f"the run has not ended; families finished: {done}"})

    report = run_suite(opts, settings, family_done=family_done)
    publish(args, report, bench_text(report), "plot_bench")
    return 0 if report["ok"] else 1


def credentials(settings: Settings) -> tuple[str, str] | None:
    if not settings.auth:
        return None
    user, sep, password = settings.auth.partition(":")
    if not sep:
        raise InputError("WENMO_AUTH must be user:password")
    return user, password


def run_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from bench.loadtest import LoadOptions, run
    from bench.report import loadtest_text

    opts = LoadOptions(
        url=args.url, allow_remote=args.allow_remote, stages=tuple(args.stages), users=args.users,
        ramp_steps=tuple(args.ramp_steps), step_s=args.step_s, step_requests=args.step_requests,
        baseline_requests=args.baseline_requests, baseline_s=args.baseline_s, soak_users=max(0, args.soak_users),
        soak_s=args.soak_s, soak_requests=args.soak_requests, mixed_s=args.mixed_s,
        mixed_requests=args.mixed_requests, mix=args.mix, metrics_interval_s=args.metrics_interval_s,
        p95_target_ms=args.p95_target_ms, request_timeout_s=args.load_request_timeout_s,
        ready_timeout_s=args.ready_timeout_s, model=args.request_model or settings.embed_model,
        seed=args.load_seed, command=list(sys.argv), **soak_options(args))
    report = run(opts, credentials(settings))
    publish(args, report, loadtest_text(report), "plot_loadtest")
    return 0


def given_settings_env(args: argparse.Namespace) -> dict[str, str]:
    """The Settings flags given on this command line, as the WENMO_* variables a child process reads."""
    return {env_name(name): str(value) for name, value in vars(args).items()
            if name in FIELD_NAMES and value is not None}


def run_batching(args: argparse.Namespace, settings: Settings, base_env: dict[str, str] | None = None) -> int:
    from bench.batching import BatchingOptions, run
    from bench.report import batching_text

    if getattr(args, "demo", False):
        raise InputError("--demo does not apply to bench-batching: choose the models with --size tiny|full or --model")
    if getattr(args, "batch_across_requests", None) is not None:
        raise InputError("bench-batching runs one server with --batch-across-requests on and one with off: leave "
                         "the flag out")
    opts = BatchingOptions(
        size=args.size, model=args.bench_embed_model, models_dir=args.bench_models_dir, users=args.users,
        requests=args.batching_requests, warmup=args.batching_warmup, compare_texts=args.compare_texts,
        rounds=args.rounds, seed=args.bench_seed, client_timeout_s=args.client_timeout_s,
        ready_timeout_s=args.ready_timeout_s, keep_work_dir=args.keep_work_dir, command=list(sys.argv))
    report = run(opts, settings, given_settings_env(args), base_env)
    print(batching_text(report), flush=True)
    if args.json_path:
        _write_json(args.json_path, report)
    return 1 if args.check and not report["targets_met"] else 0
