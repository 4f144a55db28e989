"""A finished soak judged again by today's rule, from its JSON: no server, no load, only the samples it kept.

Why: the verdict's fit changed on 2026-11-27 from least squares to Theil–Sen (bench/stats.py says why), and the
soaks published before were judged by the old one; and a step in the curve past the warm-up the soak was given
(the heap settling for good at 900 s in a soak warmed up for 600) is worth judging from a later start as well; and
`--until-s` judges only the samples up to a time, to compare a long soak with a short one over the same stretch of
their lives (a GPU lease's seven minutes against the CPU's two hours: README "Memory over days").
Prints the same memory table the soak printed; `--json` writes the report with the new verdict in place of the
old (the old one kept beside it, as `verdict_before`), `--plot` redraws the chart with the new fitted lines.

    python -m bench.rejudge SOAK.json [--warmup-s S] [--until-s U] [--json PATH] [--plot PATH]
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


class WindowError(ValueError):
    """The window asked for holds nothing to judge."""


def rejudge(report: dict[str, Any], warmup_s: float | None = None, until_s: float | None = None) -> dict[str, Any]:
    """A copy of a `wenmo soak` report whose verdict is recomputed from its samples (settled ones where it has them,
    as the soak fitted), from `warmup_s` or the soak's own warm-up, up to `until_s` (seconds into the soak) or the
    end. The rate stays the soak's own: the window changes what is fitted, not what a day is."""
    out = copy.deepcopy(report)
    soak = out["soak"]
    old = soak["verdict"]
    start = old["warmup_s"] if warmup_s is None else warmup_s
    if until_s is not None and until_s <= start:
        raise WindowError(f"--until-s {until_s:g} is not after the warm-up's end ({start:g} s)")
    samples = soak.get("settled_samples") or soak["memory_samples"]
    rows = [(t, gauges, n) for t, gauges, n in samples if until_s is None or t <= until_s]
    soak["verdict_before"] = old
    soak["verdict"] = prometheus.memory_verdict(rows, start, old["rate_rps"], old["budget_mib_per_day"],
                                                series=old["series"])
    if until_s is not None:
        soak["verdict"]["until_s"] = until_s
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rejudge", description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="a `wenmo soak --json` file")
    p.add_argument("--warmup-s", type=float, default=None, help="judge from this many seconds (default: the soak's)")
    p.add_argument("--until-s", type=float, default=None,
                   help="judge only the samples up to this many seconds into the soak (default: to its end)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the rejudged report here")
    p.add_argument("--plot", dest="plot_path", metavar="PATH", help="write the chart, with the new fits, here")
    args = p.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        judged = rejudge(report, args.warmup_s, args.until_s)
    except WindowError as e:
        print(f"bench.rejudge: {e}: give a later --until-s or an earlier --warmup-s", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"bench.rejudge: {args.report} is not a readable `wenmo soak --json` report ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    before = judged["soak"]["verdict_before"]
    window = "" if args.until_s is None else f"; only the samples up to {args.until_s:g} s"
    lines = [f"rejudged: {args.report} (before: {before.get('verdict')}, {before.get('rule')}){window}",
             *soak_memory_lines(judged["soak"])]
    publish(args, judged, "\n".join(lines), plot="plot_soak")
    return 0 if judged["soak"]["verdict"]["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
