"""The `tune` and `evaluate` subcommands: their flags and entry points, for app/cli.py to wire in.

Flag destinations never collide with Settings field names except the source model's (`--embed-model`,
`--cross-model`: the same settings `serve` and `similarity` take), so `Settings.replace(**vars(args))` picks up
exactly those. Imports nothing heavy at module level (`wenmo --help` stays instant).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from app.argtypes import positive_float, positive_int
from app.composition import demo_models
from app.config import Settings
from app.engine.dsconfig import load_ds_config
from app.engine.loading import resolve_model
from app.engine.runtime import resolve_plan
from app.errors import InputError
from app.tune.evaluation import evaluate, role_of
from app.tune.pairs import read_pairs
from app.tune.trainable import EMBED_LOSSES, ROLES
from app.tune.training import TuneOptions, run_tune, summary_line

log = logging.getLogger(__name__)




def add_tune_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    t = sub.add_parser(
        "tune", parents=[common], help="fine-tune the embedder or the cross-encoder on your labelled pairs "
        "(DeepSpeed ZeRO-2 per ds_config.json)",
        description="Fine-tune on rows `text_a, text_b, label` (JSONL, CSV or TSV; label 0/1 or a score in "
                    "[0, 1]), evaluate before and after on the held-out file, and write a new checkpoint in the "
                    "source's layout. Optimizer, precision and ZeRO stage come from ds_config.json. Several GPUs: "
                    "`deepspeed --num_gpus N -m app tune …`.")
    t.add_argument("--model", dest="tune_role", required=True, choices=ROLES,
                   help="which model to tune: embed (GTE embedder) or cross (StructBERT cross-encoder)")
    t.add_argument("--embed-model", help="the embedder to start from: directory or ModelScope id "
                   "[env WENMO_EMBED_MODEL]")
    t.add_argument("--cross-model", help="the cross-encoder to start from: directory or ModelScope id "
                   "[env WENMO_CROSS_MODEL]")
    t.add_argument("--train", dest="train_path", required=True, metavar="FILE", help="training pairs")
    t.add_argument("--eval", dest="eval_path", required=True, metavar="FILE", help="held-out pairs")
    t.add_argument("--out", dest="out_dir", metavar="DIR",
                   help="new directory for the tuned checkpoint (default <model dir>/tuned/<role>-<timestamp>)")
    t.add_argument("--report", dest="report_path", metavar="FILE.json",
                   help="report file (default <out>/tune-report.json); a .png chart is written beside it")
    t.add_argument("--events", dest="events_path", metavar="FILE.jsonl",
                   help="append progress as JSON lines (start, eval, step, done / error / cancelled)")
    t.add_argument("--epochs", type=positive_int, default=1, help="passes over the training pairs (default 1)")
    t.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (instead of --epochs)")
    t.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None,
                   help="pairs per micro-batch and GPU (default ds_config.json's train_micro_batch_size_per_gpu)")
    t.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (default ds_config.json's optimizer.params.lr)")
    t.add_argument("--loss", choices=EMBED_LOSSES, default="auto",
                   help="embedder loss: auto (default: in-batch for 0/1 labels, cosent for scores), cosent (CoSENT "
                        "on cosine) or in-batch (in-batch negatives; 0/1 labels)")
    t.add_argument("--seed", type=int, default=0, help="shuffling and initialisation seed (default 0)")
    # DeepSpeed's launcher appends --local_rank=N to each process's arguments; the rank is read from LOCAL_RANK.
    t.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                   help=argparse.SUPPRESS)
    return t


def add_evaluate_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:  # noqa: ANN401
    e = sub.add_parser(
        "evaluate", parents=[common], help="a checkpoint's figures on held-out pairs (Spearman; accuracy, F1, "
        "ROC-AUC)",
        description="Embedder: Spearman of cosine against the label (and ROC-AUC); cross-encoder: accuracy, F1 "
                    "and ROC-AUC of P(similar) at 0.5.")
    e.add_argument("--model", dest="eval_model", metavar="DIR|ID", help="the checkpoint (directory or ModelScope id)")
    e.add_argument("--eval", dest="eval_path", required=True, metavar="FILE", help="held-out pairs")
    e.add_argument("--role", choices=ROLES, default=None,
                   help="embed or cross (default: from the checkpoint's configuration.json task)")
    e.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    return e


def run_tune_command(args: argparse.Namespace, settings: Settings) -> int:
    options = TuneOptions(role=args.tune_role, train=args.train_path, eval=args.eval_path, out=args.out_dir,
                          report=args.report_path, events=args.events_path, epochs=args.epochs, steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, loss=args.loss, seed=args.seed, demo=args.demo)
    outcome = run_tune(options, settings)
    if outcome.summary is not None:
        print(json.dumps(outcome.summary, ensure_ascii=False))
    return outcome.exit_code


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    pairs = read_pairs(args.eval_path)  # a bad line is named before any model loads
    if args.demo:
        if args.role is None:
            raise InputError("--demo evaluates a tiny demo model: say which with --role embed or --role cross")
        path, name = demo_models(Path(settings.state_dir).expanduser())[args.role], f"demo:{args.role}"
    else:
        if not args.eval_model:
            raise InputError("give --model DIR (the checkpoint to evaluate), or --demo with --role")
        path, name = resolve_model(args.eval_model, settings.model_dir), args.eval_model
    role = args.role or role_of(path)
    plan = resolve_plan(settings.device, settings.dtype, "torch", load_ds_config(settings.ds_config),
                        min_batch_fill=settings.min_batch_fill)
    metrics = evaluate(role, path, pairs, plan, settings.max_length)
    if args.as_json:
        print(json.dumps({"model": name, "role": role, "pairs": len(pairs.pairs), "metrics": metrics},
                         ensure_ascii=False))
    else:
        print(f"{summary_line(metrics)}  ({role}, {len(pairs.pairs)} pairs, {name})")
    sys.stdout.flush()
    return 0
