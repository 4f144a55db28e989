"""A finished soak judged again by today's rule, from its JSON: no server, no load, only the samples it kept.

Why: the verdict's fit changed on 2026-11-27 from least squares to Theil–Sen (bench/stats.py says why), and the
soaks published before were judged by the old one; and a step in the curve past the warm-up the soak was given
(the heap settling for good at 900 s in a soak warmed up for 600) is worth judging from a later start as well.
Prints the same memory table the soak printed; `--json` writes the report with the new verdict in place of the
old (the old one kept beside it, as `verdict_before`), `--plot` redraws the chart with the new fitted lines.

    python -m bench.rejudge SOAK.json [--warmup-s S] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from bench import prometheus
from bench.cli import publish
from bench.report import soak_memory_lines


def rejudge(report: dict[str, Any], warmup_s: float | None = None) -> dict[str, Any]:
    """A copy of a `wenmo soak` report whose verdict is recomputed from its samples (settled ones where it has them,
    as the soak fitted), from `warmup_s` or the soak's own warm-up."""
    out = copy.deepcopy(report)
    soak = out["soak"]
    old = soak["verdict"]
    samples = soak.get("settled_samples") or soak["memory_samples"]
    rows = [(t, gauges, n) for t, gauges, n in samples]
    soak["verdict_before"] = old
    soak["verdict"] = prometheus.memory_verdict(rows, old["warmup_s"] if warmup_s is None else warmup_s,
                                                old["rate_rps"], old["budget_mib_per_day"], series=old["series"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rejudge", description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="a `wenmo soak --json` file")
    p.add_argument("--warmup-s", type=float, default=None, help="judge from this many seconds (default: the soak's)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the rejudged report here")
    p.add_argument("--plot", dest="plot_path", metavar="PATH", help="write the chart, with the new fits, here")
    args = p.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        judged = rejudge(report, args.warmup_s)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"bench.rejudge: {args.report} is not a readable `wenmo soak --json` report ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    before = judged["soak"]["verdict_before"]
    lines = [f"rejudged: {args.report} (before: {before.get('verdict')}, {before.get('rule')})",
             *soak_memory_lines(judged["soak"])]
    publish(args, judged, "\n".join(lines), plot="plot_soak")
    return 0 if judged["soak"]["verdict"]["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
