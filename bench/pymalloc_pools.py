"""Where a running process's Python small-object memory is, and how full it is: pymalloc's pools, found by their
headers in the process's anonymous mappings.

    python -m bench.pymalloc_pools PID [--top 10] [--json PATH]

Why: a soak's resident memory stepped up now and then outside the C heap with Python's block count flat
(README, "Memory over days"). `/proc/PID/smaps` cannot say what such a step is — the kernel merges adjacent
anonymous mappings, so pymalloc's 1 MiB arenas are not 1 MiB mappings — but pymalloc writes a header at the start
of every pool, and this reads them (`/proc/PID/mem`; the same user or root). The header (CPython ≥ 3.10 on 64-bit,
where pools are 16 KiB in 1 MiB arenas): `ref.count` (blocks in use) at 0, `szidx` (size class) at 36 and
`maxnextoffset` at 44, which is always the pool size less one block, so a page that is not a pool almost never
passes. Per mapping it prints the pools, the bytes their blocks hold, the pools' capacity and the empty pools: an
arena whose pools are nearly all empty is resident memory a few live objects keep (pymalloc gives an arena back
only when every pool in it is empty). Linux only.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import sys
from typing import Any

from bench.cli import publish

POOL = 16 << 10  # CPython ≥ 3.10 on 64-bit (radix tree): 16 KiB pools, 1 MiB arenas
HEADER = 48  # sizeof(struct pool_header), rounded to the 16-byte alignment
ALIGN = 16  # size classes are multiples of 16 bytes
MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\s*$")


def pool_at(header: bytes) -> tuple[int, int] | None:
    """(block size, blocks in use) when `header` is a pymalloc pool's header, else None."""
    count, = struct.unpack_from("<I", header, 0)
    szidx, nextoffset, maxnext = struct.unpack_from("<III", header, 36)
    size = (szidx + 1) * ALIGN
    if szidx >= 32 or maxnext != POOL - size or not HEADER <= nextoffset <= POOL:
        return None
    return size, count if count <= (POOL - HEADER) // size else -1


def anonymous_mappings(pid: int | str) -> list[tuple[int, int]]:
    """The process's private, anonymous, read-write mappings (heaps, arenas, stacks, mmapped chunks)."""
    out = []
    with open(f"/proc/{pid}/maps", encoding="ascii") as f:
        for line in f:
            m = MAPPING.match(line.rstrip("\n"))
            if m:
                out.append((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def scan(pid: int | str) -> list[dict[str, Any]]:
    """Every anonymous mapping that holds pymalloc pools: its pools, the bytes in use, their capacity, empty pools."""
    found = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end in anonymous_mappings(pid):
            pools = used = capacity = empty = 0
            for off in range(-(-start // POOL) * POOL, end - HEADER + 1, POOL):
                try:
                    mem.seek(off)
                    header = mem.read(HEADER)
                except OSError:  # a page the kernel will not read (a guard page)
                    continue
                pool = pool_at(header) if len(header) == HEADER else None
                if pool is None or pool[1] < 0:
                    continue
                size, count = pool
                pools += 1
                used += count * size
                capacity += (POOL - HEADER) // size * size
                empty += count == 0
            if pools:
                found.append({"start": hex(start), "end": hex(end), "mib": (end - start) / 2**20, "pools": pools,
                              "in_use_mib": used / 2**20, "capacity_mib": capacity / 2**20, "empty_pools": empty})
    return found


def table(rows: list[dict[str, Any]], top: int) -> str:
    total = {k: sum(r[k] for r in rows) for k in ("pools", "in_use_mib", "capacity_mib", "empty_pools")}
    lines = [f"pymalloc pools: {total['pools']} in {len(rows)} mappings, {total['in_use_mib']:.2f} MiB in use of "
             f"{total['capacity_mib']:.2f} MiB, {total['empty_pools']} pools empty", "",
             f"{'mapping':>29}  {'MiB':>6}  {'pools':>5}  {'in use MiB':>10}  {'capacity MiB':>12}  {'empty':>5}"]
    for r in sorted(rows, key=lambda r: r["capacity_mib"] - r["in_use_mib"], reverse=True)[:top]:
        lines.append(f"{r['start'] + '-' + r['end'][2:]:>29}  {r['mib']:6.2f}  {r['pools']:5d}  "
                     f"{r['in_use_mib']:10.2f}  {r['capacity_mib']:12.2f}  {r['empty_pools']:5d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pymalloc_pools", description=__doc__.split("\n\n")[0])
    p.add_argument("pid", help="the process (a number, or `self`)")
    p.add_argument("--top", type=int, default=10, help="mappings listed, emptiest first (default 10)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write every mapping found as JSON")
    a = p.parse_args(argv)
    if not os.path.exists(f"/proc/{a.pid}/mem"):
        print(f"error: no process {a.pid} here (or no /proc: Linux only)", file=sys.stderr)
        return 2
    rows = scan(a.pid)
    publish(a, {"schema": "wenmo-pymalloc-pools/1", "pid": a.pid, "mappings": rows}, table(rows, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
