"""bench.native_memory tells a leak from a per-shape cache from per-thread state: checked against planted ones
(forwards that keep 64 KiB of C heap each time, once per shape, once per thread), then once on the tiny
embedder on the CPU."""

from __future__ import annotations

import itertools
import threading

import pytest

from bench import native_memory as nm

KEEP = 64 * 1024  # bytes objects this large live in the C heap (malloc), not in Python's small-object arenas
IDS = (101, 102, 103)


def kept_per(key):  # noqa: ANN001, ANN201 - a forward that keeps KEEP bytes for each new key(work)
    kept: dict = {}

    def forward(work):  # noqa: ANN001, ANN202
        k = key(work)
        if k not in kept:
            kept[k] = bytes(KEEP) + bytes([len(kept) % 256])  # a fresh allocation, not a shared constant
    return forward


def shape(work):  # noqa: ANN001, ANN201
    return len(work), len(work[0][0])


_local, _threads = threading.local(), itertools.count()


def thread(work):  # noqa: ANN001, ANN201 - one key per thread that ever ran a forward (idents are reused)
    if not hasattr(_local, "n"):
        _local.n = next(_threads)
    return _local.n


@pytest.mark.parametrize(("key", "grows", "verdict"), [
    (lambda work: object(), nm.PHASES, "a leak per forward"),  # a new key every forward
    (shape, ("new",), "a per-shape cache"),
    (thread, ("threads",), "per fresh thread"),
    (lambda work: "always the same", (), "flat in every phase"),
])
def test_each_planted_retention_is_told_apart(key, grows, verdict) -> None:
    phases = nm.measure(kept_per(key), 128, IDS, 40, cuda=False)
    heap = {p: phases[p]["per_forward"]["heap_in_use_kib_per_forward"] for p in nm.PHASES}
    for p, kib in heap.items():
        if p in grows:
            assert kib > 0.9 * KEEP / 1024, heap  # every forward of that phase kept its 64 KiB
        else:
            assert kib < nm.FLAT_KIB, heap
    assert verdict in nm.verdict(phases)


def test_the_new_phase_never_repeats_a_shape_and_again_repeats_exactly_those() -> None:
    new = nm.shapes("new", 200, 512)
    assert len(set(new)) == 200 and all(1 <= rows <= nm.ROWS_CYCLE and 4 <= n <= 512 for rows, n in new)
    assert set(nm.shapes("same", 50, 512)) == {(8, 32)} and nm.shapes("threads", 5, 16) == [(8, 16)] * 5
    with pytest.raises(ValueError, match="room for 32 distinct shapes"):
        nm.shapes("new", 33, 5)
    rows = nm.batch(3, 6, *IDS)
    assert rows == [([101, 103, 103, 103, 103, 102], [0] * 6)] * 3


def test_the_tiny_embedder_on_the_cpu_runs_every_phase(capsys) -> None:
    report = nm.run("embed", None, "cpu", "torch", 20)
    assert report["device"] == "cpu" and report["engine"] == "torch"
    assert report["attention"]["chosen"] in report["attention"]["priority_order"]
    assert "CUDNN_ATTENTION" in report["attention"]["priority_order"] and "cudnn" in report["attention"]["enabled"]
    assert [p["forwards"] for p in report["phases"].values()] == [20] * 4
    assert [p["distinct_shapes"] for p in report["phases"].values()] == [1, 20, 20, 1]
    for p in report["phases"].values():
        assert set(p["per_forward"]) == {"heap_in_use_kib_per_forward", "rss_kib_per_forward"}
        assert p["after"]["rss_mib"] > 0 and p["after"]["heap_in_use_mib"] > 0
    print(nm.table(report))
    out = capsys.readouterr().out
    assert "verdict (C heap):" in out and all(f"\n{p:<8}" in out for p in nm.PHASES)
    assert f"attention kernel for 8 × 32 tokens: {report['attention']['chosen']}" in out
