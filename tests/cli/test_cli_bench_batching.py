"""`python -m app bench-batching` is wired as a subcommand: its flags are there, and its refusals are clear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_batching_is_a_subcommand():
    out = subprocess.run([sys.executable, "-m", "app", "bench-batching", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--size", "--users", "--requests", "--compare-texts", "--rounds", "--check", "--json"):
        assert flag in out.stdout
    bad = subprocess.run([sys.executable, "-m", "app", "bench-batching", "--demo"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--size tiny|full" in bad.stderr
