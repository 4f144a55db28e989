"""Shell subcommands: `wenmo embed | join-shards | similarity | nlu | serve | download | tune | evaluate | fixtures |
plan | profile | hash-password` (the installed command; `python -m app …` is the same). The entry point is
app/__main__.py, which checks the dependencies first.

Every command shares the engine and the service with the web app. Every `Settings` field is a flag here,
built from its `scope` in app/config.py (no list of our own). An error leaves through `report_error`, the shell's
one error renderer: its message on stderr and the exit status its class names in app/errors.py (bad input 2,
a failed inference 1), never a traceback.

Imports no torch, gradio, deepspeed or transformers at module level (nor does anything it imports at the top), so
`--help` and a mistyped flag are answered at once; the model code loads them when a command builds a model.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from app.composition import build_service, demo_models, make_plan
from app.config import Settings, env_name, flag_name
from app.dependencies import EXIT_MISSING_DEPENDENCY, missing_dependency
from app.engine.loading import download_models
from app.errors import InputError, WenmoError
from app.export import write_vectors
from app.hostprofile import add_arguments as add_profile_arguments
from app.hostprofile import run as run_profile
from app.models.fixtures import build_all
from app.models.uninlu.schema import parse_schema, resolve_task
from app.service import Embeddings, similarity_work
from app.shards import Shard, ShardRecord, count_lines, input_sha256, join, parse_shard, select
from app.textinput import numbered_lines, parse_lines
from app.tune.commands import add_evaluate_parser, add_tune_parser, run_evaluate, run_tune_command
from app.web.auth import GENERATED_USER, HASH_ITERATIONS, hash_password
from app.web.server import serve

log = logging.getLogger("app")

EXIT_INTERRUPTED = 130  # the shell's own convention for Ctrl-C (128 + SIGINT), not an error class's
# The flags that name a model, per command (dest → flag as typed): --demo replaces every model with its tiny one, so
# it refuses these rather than ignore them (README "The shell CLI").
MODEL_FLAGS = {"embed": {"embed_model": "--model"}, "nlu": {"nlu_model": "--model"},
               "similarity": {"embed_model": "--embed-model", "cross_model": "--cross-model"},
               "serve": {"embed_model": "--embed-model", "cross_model": "--cross-model", "nlu_model": "--nlu-model"},
               "tune": {"embed_model": "--embed-model", "cross_model": "--cross-model"},
               "evaluate": {"eval_model": "--model"}}


def program_name() -> str:
    """`wenmo` when run as the installed command, else `python -m app` (usage lines show what the user typed)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("wenmo") else "python -m app"


def add_setting_flags(parser: argparse.ArgumentParser, scope: str) -> None:
    """A flag for every Settings field of `scope` ("common" or "serve"), named `--` + the field with dashes."""
    for f in dataclasses.fields(Settings):
        if f.metadata["scope"] != scope:
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        parser.add_argument(flag_name(f.name), dest=f.name, type=kind, default=None, choices=f.metadata["choices"],
                            help=f"{f.metadata['help']} [env {env_name(f.name)}, default {f.default}]")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_setting_flags(common, "common")
    common.add_argument("--demo", action="store_true",
                        help="use tiny random-weight models built locally (no network; outputs are meaningless)")

    p = argparse.ArgumentParser(prog=program_name(), description="Wenmo 文墨: Chinese text semantics.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("embed", parents=[common], help="embed texts, one per line")
    e.add_argument("--model", dest="embed_model", help="GTE model dir or ModelScope id [env WENMO_EMBED_MODEL]")
    e.add_argument("--input", help="UTF-8 file, one text per line (default: stdin)")
    e.add_argument("--output", help="file to write (default: stdout; required for npy)")
    e.add_argument("--format", choices=("jsonl", "csv", "npy"), default="jsonl")
    e.add_argument("--no-normalize", action="store_true", help="raw vectors instead of unit length")
    e.add_argument("--skip-blank", action="store_true", help="skip blank lines instead of failing")
    e.add_argument("--shard", metavar="I/N", help="embed only shard I (from 0) of N: input lines [I*L//N, "
                   "(I+1)*L//N) of L; writes OUTPUT with .shard-IIIII-of-NNNNN before its extension, and a .json "
                   "record beside it for join-shards")

    j = sub.add_parser("join-shards", help="join the files of `embed --shard` in input order, checking that they "
                       "are all the shards of one input")
    j.add_argument("--output", required=True, help="file to write (same format as the shards)")
    j.add_argument("files", nargs="+", metavar="FILE", help="the shard files, in any order (e.g. vectors.shard-*.npy)")

    s = sub.add_parser("similarity", parents=[common], help="score candidates against a source text")
    s.add_argument("--embed-model", help="GTE model dir or ModelScope id [env WENMO_EMBED_MODEL]")
    s.add_argument("--cross-model", help="StructBERT cross-encoder to rerank with (implies --rerank) "
                   "[env WENMO_CROSS_MODEL]")
    s.add_argument("--rerank", action="store_true", help="rerank with the cross-encoder: --cross-model, else "
                   "WENMO_CROSS_MODEL or its default; with --demo the tiny one")
    s.add_argument("--source", required=True, help="the text to compare against")
    s.add_argument("--input", help="candidates, one per line (default: stdin)")
    s.add_argument("--skip-blank", action="store_true", help="skip blank lines instead of failing")

    n = sub.add_parser("nlu", parents=[common], help="schema-driven extraction/classification (RexUniNLU)")
    n.add_argument("--model", dest="nlu_model", help="RexUniNLU model dir or ModelScope id [env WENMO_NLU_MODEL]")
    n.add_argument("--text", help="the text")
    n.add_argument("--schema", help='JSON schema, e.g. \'{"人物": null, "地理位置": null}\'')
    n.add_argument("--task", choices=("extract", "classify", "multi_classify"), default=None)
    n.add_argument("--input", help='JSONL file: {"text": ..., "schema": ..., "task": optional} per line')

    v = sub.add_parser("serve", parents=[common], help="run the web app (UI + HTTP API)")
    add_setting_flags(v, "serve")
    v.add_argument("--no-auth", action="store_true", help="no authentication (only on a loopback address)")

    d = sub.add_parser("download", help="download the models the settings name into the model cache, once (a "
                       "model already complete there is left as it is); for a shared model volume")
    for f in dataclasses.fields(Settings):  # the settings that name the models and where they go, nothing else
        if f.name in ("model_dir", "embed_model", "cross_model", "nlu_model", "log_level"):
            d.add_argument(flag_name(f.name), dest=f.name, choices=f.metadata["choices"],
                           help=f"{f.metadata['help']} [env {env_name(f.name)}, default {f.default}]")

    add_tune_parser(sub, common)
    add_evaluate_parser(sub, common)

    f = sub.add_parser("fixtures", help="write tiny (or --full size) random-weight checkpoints")
    f.add_argument("--out", required=True, help="directory to write into")
    f.add_argument("--full", action="store_true", help="full-size replicas of the real architectures")

    sub.add_parser("plan", parents=[common], help="print the runtime plan and what ds_config.json does")

    add_profile_arguments(sub.add_parser("profile", help="print the serving settings for this machine's GPU (or "
                                         "the CPU), or for a GPU named with --gpu"))

    h = sub.add_parser("hash-password", help="print a `user:pbkdf2_sha256$…` line for WENMO_AUTH_FILE; the password "
                       "comes from a prompt (twice) or one line on stdin, never from the command line")
    h.add_argument("--user", default=GENERATED_USER, help=f"user name (default {GENERATED_USER})")
    h.add_argument("--iterations", type=int, default=HASH_ITERATIONS,
                   help=f"PBKDF2-HMAC-SHA256 iterations (default {HASH_ITERATIONS})")

    # The measurement tools live beside the app package (bench/), imported here and in their commands only; a
    # copy of the app without them (a slim image) still serves, and simply has no bench commands.
    try:
        from bench.cli import add_batching_parser, add_bench_parser, add_loadtest_parser, add_soak_parser
        from bench.tuning import add_tune_bench_parser
    except ModuleNotFoundError as e:
        if e.name != "bench":
            raise
        return p
    add_bench_parser(sub, common)
    add_loadtest_parser(sub, common)
    add_batching_parser(sub, common)
    add_soak_parser(sub, common)
    add_tune_bench_parser(sub, common)
    return p


def settings_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    base = Settings.from_env(os.environ if env is None else env)
    return base.replace(**vars(args))


def read_input_bytes(path: str | None) -> tuple[bytes, str]:
    if path is None or path == "-":
        return sys.stdin.buffer.read(), "stdin"
    try:
        return Path(path).read_bytes(), path
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); check the path") from None


def refuse_models_with_demo(args: argparse.Namespace) -> None:
    """--demo loads the tiny models for every role; a model flag beside it would be silently ignored, so it is an
    error. Only flags: a WENMO_*_MODEL in the environment (a deployment's settings file) is simply not used."""
    if not getattr(args, "demo", False):
        return
    for dest, flag in MODEL_FLAGS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            rerank = " (to rerank with the tiny cross-encoder, use --rerank)" if dest == "cross_model" else ""
            raise InputError(f"{flag} {value}: --demo uses its own tiny models and would ignore it; leave out {flag}"
                             f"{rerank}, or leave out --demo to use that model")


@contextlib.contextmanager
def service_for(settings: Settings, roles: Sequence[str], demo: bool):  # noqa: ANN201
    """The service with the roles' models, closed when the command is done: its engine workers stop before the
    process exits. Not after an error or Ctrl-C, where closing would wait for the queued work to finish."""
    demo_dirs = demo_models(Path(settings.state_dir).expanduser()) if demo else None
    service = build_service(settings, roles, demo_dirs=demo_dirs)
    yield service
    service.close()


@contextlib.contextmanager
def progress_bar(what: str, total: int, show: bool = True) -> Iterator[Callable[[int], object]]:
    """A progress bar with rate and ETA on stderr while stderr is a terminal (and `show`); yields its `update(n)`.
    Otherwise (a pipe, a log file, cron) nothing is written: stderr keeps only warnings and errors. Opened once the
    models are loaded, so the rate is the work's own."""
    from tqdm import tqdm  # deferred: ~0.1 s to import, which --help and the quick commands do not pay

    with tqdm(total=total, desc=what, unit="text", file=sys.stderr, disable=not (show and sys.stderr.isatty()),
              dynamic_ncols=True) as bar:
        yield bar.update


def print_over_bar(line: str) -> None:
    """A stdout line while a bar may be drawn on the same terminal: the bar is cleared, the line printed and
    flushed, the bar drawn again below it."""
    from tqdm import tqdm  # deferred: as in progress_bar

    with tqdm.external_write_mode(file=sys.stdout):
        print(line, flush=True)


# ---- commands -------------------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    if args.shard is not None:
        return embed_shard(args, settings, parse_shard(args.shard))
    if args.format == "npy" and not args.output:
        raise InputError("--format npy writes binary data: give --output FILE.npy")
    data, source = read_input_bytes(args.input)
    texts = parse_lines(data, skip_blank=args.skip_blank, source=source)
    with service_for(settings, ["embed"], args.demo) as service, progress_bar("embed", len(texts)) as progress:
        result = service.embed(texts, normalize=not args.no_normalize, progress=progress)
    write_vectors(texts, result, args.format, args.output)
    return 0


def embed_shard(args: argparse.Namespace, settings: Settings, shard: Shard) -> int:
    """One shard of the input (app/shards.py): the whole input is read and checked, so every shard fails on a bad
    line the way the unsharded run would, then only this shard's lines are embedded."""
    if not args.output:
        raise InputError(f"--shard {args.shard}: each shard writes its own file; give --output FILE (shard "
                         f"{shard.index} then writes {shard.path('FILE.' + args.format).name})")
    output = args.output
    if args.format == "npy" and not output.endswith(".npy"):
        output += ".npy"  # as np.save names the unsharded file, and the record must name the file written
    data, source = read_input_bytes(args.input)
    numbered = numbered_lines(data, skip_blank=args.skip_blank, source=source)
    total = count_lines(data)
    first_line, texts, first_index, skipped = select(numbered, shard, total)
    with service_for(settings, ["embed"], args.demo) as service, progress_bar("embed", len(texts)) as progress:
        embed = service.describe().model("embed")
        if texts:
            result = service.embed(texts, normalize=not args.no_normalize, progress=progress)
        else:  # more shards than lines: an empty shard still writes its (0, dimension) file and its record
            import numpy as np

            result = Embeddings(np.zeros((0, embed.dimension), dtype=np.float32), (), (), 0.0, model=embed.name,
                                dimension=embed.dimension)
    path = shard.path(output)
    write_vectors(texts, result, args.format, str(path), first_index=first_index)
    ShardRecord(shard=shard.index, of=shard.count, format=args.format, input=source, input_sha256=input_sha256(data),
                input_lines=total, first_line=first_line, lines=shard.line_range(total)[1] - first_line + 1,
                first_index=first_index, rows=len(texts), skipped_lines=skipped, model=embed.name,
                dimension=result.dimension, normalized=not args.no_normalize).write(path)
    return 0


def cmd_join_shards(args: argparse.Namespace, settings: Settings) -> int:
    summary = join(args.files, args.output)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_similarity(args: argparse.Namespace, settings: Settings) -> int:
    data, source = read_input_bytes(args.input)
    candidates = parse_lines(data, skip_blank=args.skip_blank, source=source)
    rerank = args.rerank or args.cross_model is not None
    with service_for(settings, ["embed", "cross"] if rerank else ["embed"], args.demo) as service:
        # One bar over both passes: every text embedded, then (reranking) every candidate scored with the source.
        with progress_bar("similarity", similarity_work(len(candidates), rerank)) as progress:
            result = service.similarity(args.source, candidates, rerank=rerank, progress=progress)
    print(json.dumps(result.as_dict(), ensure_ascii=False))
    return 0


def nlu_requests(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(where, request) for each request: `where` names it as the user sees it (`FILE: line 3`; empty for
    --text, whose messages already say "text" or "schema")."""
    if args.input:
        if args.text is not None or args.schema is not None:
            raise InputError("give either --input FILE.jsonl or --text with --schema, not both")
        data, source = read_input_bytes(args.input)
        requests = []
        for number, line in numbered_lines(data, skip_blank=True, source=source):  # the file's own line numbers
            where = f"{source}: line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where} is not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict) or "text" not in obj or "schema" not in obj:
                raise InputError(f'{where} must be an object with "text" and "schema"')
            requests.append((where, {"text": obj["text"], "schema": obj["schema"], "task": obj.get("task", args.task)}))
        return requests
    if args.text is None or args.schema is None:
        raise InputError("give --text and --schema (or --input FILE.jsonl)")
    return [("", {"text": args.text, "schema": args.schema, "task": args.task})]


def check_nlu_request(where: str, request: dict[str, Any], settings: Settings) -> None:
    """Everything about one request that needs no model: the text, the task and the schema, so that a typo is
    reported before the model loads (seconds, minutes for a real model on a CPU). The service checks again."""
    try:
        resolve_task(request["text"], request["task"])  # a string, not blank, a known task, no control tokens
        if len(request["text"]) > settings.max_chars:
            raise InputError(f"the text has {len(request['text'])} characters, the limit is {settings.max_chars} "
                             "(WENMO_MAX_CHARS); shorten or split it")
        parse_schema(request["schema"])
    except InputError as e:
        raise located(e, where) from None


def located(error: WenmoError, where: str) -> WenmoError:
    """`error` with its message prefixed by `where` (when there is one); class and exit status unchanged."""
    if where:
        error.message = f"{where}: {error.message}"
        error.args = (error.message,)
    return error


def cmd_nlu(args: argparse.Namespace, settings: Settings) -> int:
    requests = nlu_requests(args)
    for where, request in requests:
        check_nlu_request(where, request, settings)
    with service_for(settings, ["nlu"], args.demo) as service:
        with progress_bar("nlu", len(requests), show=bool(args.input)) as advance:  # one --text: no bar
            for where, request in requests:
                try:
                    result = service.nlu(request["text"], request["schema"], request["task"])
                except InputError as e:  # what only the model can tell, e.g. a request past the NLU work budgets
                    raise located(e, where) from None
                print_over_bar(json.dumps(result.as_dict(), ensure_ascii=False))
                advance(1)
    return 0


def cmd_download(args: argparse.Namespace, settings: Settings) -> int:
    models = {"embed": settings.embed_model, "cross": settings.cross_model, "nlu": settings.nlu_model}
    download_models(models, settings.model_dir, report=lambda line: print(line, flush=True))
    return 0


def cmd_fixtures(args: argparse.Namespace, settings: Settings) -> int:
    dirs = build_all(Path(args.out), full=args.full)
    print(json.dumps({role: str(p) for role, p in dirs.items()}))
    return 0


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    plan = make_plan(settings)
    print(json.dumps(dataclasses.asdict(plan), ensure_ascii=False))
    return 0


def cmd_profile(args: argparse.Namespace, settings: Settings) -> int:
    return run_profile(args)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    return serve(settings, demo=args.demo, no_auth=args.no_auth)


def read_password() -> str:
    """The password to hash: typed twice at a prompt on a terminal, else the first line of stdin. Never an
    argument, where `ps` and the shell's history would keep it."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise InputError("the two passwords differ; run the command again and type the same password twice")
    else:
        try:  # bytes, decoded strictly: the text layer would turn bad bytes into surrogates that cannot be hashed
            password = sys.stdin.buffer.readline().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError("stdin is not UTF-8 text; give the password as one UTF-8 line") from None
    if not password:
        raise InputError("the password is empty; type one at the prompt or give it as the first line of stdin")
    return password


def cmd_hash_password(args: argparse.Namespace, settings: Settings) -> int:
    user = args.user.strip()
    if not user or ":" in user:
        raise InputError(f"--user {args.user!r}: a user name must be non-empty and must not contain ':' (the ':' "
                         "ends the name in a `user:secret` line); choose another name")
    if args.iterations < 1:
        raise InputError(f"--iterations {args.iterations}: must be at least 1; leave it out for the default "
                         f"{HASH_ITERATIONS}")
    print(f"{user}:{hash_password(read_password(), iterations=args.iterations)}")
    return 0


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    return run_tune_command(args, settings)


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    return run_evaluate(args, settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.cli import run_bench

    return run_bench(args, settings)


def cmd_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from bench.cli import run_loadtest

    return run_loadtest(args, settings)


def cmd_bench_batching(args: argparse.Namespace, settings: Settings) -> int:
    from bench.cli import run_batching

    return run_batching(args, settings)


def cmd_bench_tune(args: argparse.Namespace, settings: Settings) -> int:
    from bench.tuning import run_tune_bench

    return run_tune_bench(args, settings)


def cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
    from bench.cli import run_soak

    return run_soak(args, settings)


COMMANDS = {"embed": cmd_embed, "join-shards": cmd_join_shards, "similarity": cmd_similarity, "nlu": cmd_nlu,
            "serve": cmd_serve, "download": cmd_download, "tune": cmd_tune, "evaluate": cmd_evaluate,
            "fixtures": cmd_fixtures, "plan": cmd_plan,
            "profile": cmd_profile, "bench": cmd_bench, "loadtest": cmd_loadtest,
            "bench-batching": cmd_bench_batching, "bench-tune": cmd_bench_tune, "soak": cmd_soak,
            "hash-password": cmd_hash_password}


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("DeepSpeed", "deepspeed", "transformers", "modelscope", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def report_error(error: BaseException) -> int:
    """The shell's one error renderer: `error: <message>` on stderr, and the exit status the error's class names
    (app/errors.py). A failure no check foresaw (a broken checkpoint, a bug) gets one line too, never a traceback,
    and WenmoError's status."""
    if isinstance(error, WenmoError):
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    if isinstance(error, ModuleNotFoundError) and missing_dependency(error):  # torch & co. load when a model does
        print(missing_dependency(error), file=sys.stderr)
        return EXIT_MISSING_DEPENDENCY
    log.debug("event=cli_failed", exc_info=error)  # --log-level DEBUG shows where
    print(f"error: the command failed: {type(error).__name__}: {error} (run with --log-level DEBUG for the "
          "details)", file=sys.stderr)
    return WenmoError.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 from argparse, InputError's status
    try:
        refuse_models_with_demo(args)
        settings = settings_from(args)
        configure_logging(settings.log_level)
        return COMMANDS[args.command](args, settings)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        return report_error(e)
