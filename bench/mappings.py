"""A running process's resident memory by kind of mapping, sampled in its quiet moments (a soak's settled pauses).

    python -m bench.mappings PID [--every-s 15] > mappings.log

Where `wenmo_heap_bytes` (glibc's own accounting) says what malloc holds, this says what is *resident*, from
/proc/PID/smaps, by the mapping the pages are in — which allocator's memory grows between quiet moments:

- `main`: `[heap]`, glibc's main arena (grown with brk; only its top can be given back whole);
- `arenas`: anonymous mappings on a 64 MiB boundary, at most 64 MiB — glibc's other arenas' heaps;
- `py1M`: anonymous mappings of exactly 1 MiB — CPython's pymalloc arenas (objects of ≤ 512 bytes) when the kernel
  has not merged them with a neighbour, which it often does: `python -m bench.pymalloc_pools PID` finds them all;
- `anon`: every other anonymous mapping — malloc's mmapped chunks (large tensors), thread stacks, jemalloc's
  extents when it is preloaded;
- `file`: mapped files (code of Python, torch and the other libraries; weights read with mmap);
- `named`: the stack, vdso and other `[…]` mappings;
- `thp`: of all these, what transparent huge pages back.

A sample is taken when the process has used at most `--quiet-ticks` clock ticks of CPU over the last 1.5 s (the
soak's pauses: users paused, nothing in flight), then not again for `--every-s` seconds. Linux only.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$")
ARENA_HEAP = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: non-main arenas' heaps are aligned to it
PYMALLOC_ARENA = 1 << 20  # CPython ≥ 3.10 with its radix tree: 1 MiB arenas
KINDS = ("main", "arenas", "py1M", "anon", "file", "named")


def kind(start: int, end: int, name: str) -> str:
    if name == "[heap]":
        return "main"
    if name.startswith("/"):
        return "file"
    if name.startswith("["):
        return "named"
    if start % ARENA_HEAP == 0 and end - start <= ARENA_HEAP:
        return "arenas"
    return "py1M" if end - start == PYMALLOC_ARENA else "anon"


def resident_by_kind(smaps: str) -> dict[str, float]:
    """MiB resident per kind of mapping (and `thp`: of those, on transparent huge pages) in a smaps text."""
    kib: collections.Counter[str] = collections.Counter({k: 0 for k in (*KINDS, "thp")})
    current = None
    for line in smaps.splitlines():
        m = MAPPING.match(line)
        if m:
            current = kind(int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip())
        elif line.startswith("Rss:") and current:
            kib[current] += int(line.split()[1])
        elif line.startswith("AnonHugePages:"):
            kib["thp"] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in kib.items()}


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def quiet_samples(pid: int, every_s: float, quiet_ticks: int) -> Iterator[dict[str, float]]:
    recent: collections.deque[int] = collections.deque(maxlen=4)  # 4 readings 0.5 s apart: 1.5 s
    while True:
        try:
            recent.append(cpu_ticks(pid))
            if len(recent) == recent.maxlen and recent[-1] - recent[0] <= quiet_ticks:
                yield resident_by_kind(Path(f"/proc/{pid}/smaps").read_text())
                recent.clear()
                time.sleep(every_s)
            time.sleep(0.5)
        except (FileNotFoundError, ProcessLookupError):  # the process ended
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mappings", description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int)
    p.add_argument("--every-s", type=float, default=15.0, help="seconds between samples at least (default 15)")
    p.add_argument("--quiet-ticks", type=int, default=15,
                   help="CPU clock ticks over 1.5 s that still count as quiet (default 15: background threads)")
    a = p.parse_args(argv)
    if not os.path.exists(f"/proc/{a.pid}/smaps"):
        print(f"error: no process {a.pid} here (or no /proc: Linux only)", file=sys.stderr)
        return 2
    for sample in quiet_samples(a.pid, a.every_s, a.quiet_ticks):
        print(time.strftime("%T"), sample, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
