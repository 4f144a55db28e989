"""bench.pymalloc_pools: pymalloc's pools found by their headers in a live process (this one), and counted right."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from bench import pymalloc_pools as pp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or sys.version_info < (3, 10),
                                reason="reads /proc/PID/mem; 16 KiB pools since CPython 3.10")


def header(count: int, szidx: int, nextoffset: int = 64, maxnext: int | None = None) -> bytes:
    size = (szidx + 1) * 16
    maxnext = pp.POOL - size if maxnext is None else maxnext
    return struct.pack("<IIQQQIIII", count, 0, 0, 0, 0, 0, szidx, nextoffset, maxnext)


def test_a_pool_header_is_told_from_other_memory():
    assert len(header(0, 3)) == pp.HEADER
    assert pp.pool_at(header(5, 3)) == (64, 5)  # size class 3: 64-byte blocks, 5 in use
    assert pp.pool_at(header(5, 3, maxnext=pp.POOL - 48)) is None  # the wrong block size for its class
    assert pp.pool_at(header(5, 40)) is None  # no such size class
    assert pp.pool_at(bytes(pp.HEADER)) is None  # zeroed memory
    assert pp.pool_at(header(10_000, 3)) == (64, -1)  # more blocks than the pool holds: not trusted


def test_this_process_pools_hold_its_small_objects_and_the_count_follows_them():
    before = sum(r["in_use_mib"] for r in pp.scan("self"))
    assert before > 0.5
    keep = [(i, i + 1) for i in range(100_000)]
    during = sum(r["in_use_mib"] for r in pp.scan("self"))
    # 100,000 pairs (72 bytes with the GC's header: 80-byte blocks) and ~200,000 ints (32-byte blocks): ~13 MiB
    assert during - before > 8
    del keep
    after = sum(r["in_use_mib"] for r in pp.scan("self"))
    assert during - after > 8


def test_the_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "pools.json"
    assert pp.main(["self", "--top", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "wenmo-pymalloc-pools/1" and report["mappings"]
    assert all(r["in_use_mib"] <= r["capacity_mib"] for r in report["mappings"])
    assert "pymalloc pools:" in capsys.readouterr().out
    assert pp.main(["999999999"]) == 2
