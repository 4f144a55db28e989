"""`python -m app.bench bench|loadtest …`: the two subcommands on their own, with the app's common flags.

Same flags, settings and exit codes as `python -m app bench|loadtest` (app/cli.py wires the same
functions); kept so the tools run even where app/cli.py does not list them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.bench.cli import add_bench_parser, add_loadtest_parser, run_bench, run_loadtest


def build_parser() -> argparse.ArgumentParser:
    from app.cli import COMMON_FIELDS, add_setting_flags

    common = argparse.ArgumentParser(add_help=False)
    add_setting_flags(common, COMMON_FIELDS)
    p = argparse.ArgumentParser(prog="python -m app.bench", description="Wenmo measurement tools.")
    sub = p.add_subparsers(dest="command", required=True)
    add_bench_parser(sub, common)
    add_loadtest_parser(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from app.cli import EXIT_FAILED, EXIT_INPUT, configure_logging, settings_from
    from app.errors import InputError, ModelUnavailableError, WenmoError

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        configure_logging(settings.log_level)
        return {"bench": run_bench, "loadtest": run_loadtest}[args.command](args, settings)
    except (InputError, ModelUnavailableError) as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_INPUT
    except WenmoError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
