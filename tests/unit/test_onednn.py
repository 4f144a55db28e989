"""oneDNN's primitive cache (app/engine/onednn.py): the bound a cache for every ladder shape needs, against the batch
planner; the rules for `auto` (no cache unless the environment says); and — in a child process, with oneDNN's own
verbose log — that the size reaches the library."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from app.config import Settings
from app.engine.batching import plan_batches
from app.engine.onednn import ENV, apply, mib, resolve_capacity, shapes_bound
from app.engine.runtime import resolve_plan
from app.engine.shapes import bucket_length, ladder
from app.errors import ConfigError

DEFAULTS = Settings()


def every_shape(max_batch_tokens: int, max_batch_size: int, limit: int) -> set[tuple[int, int]]:
    """The reference, by brute force: every (rows, padded length) the planner's two limits allow — one row always,
    more while rows × padded length stays within the budget."""
    out = set()
    for longest in range(1, limit + 1):
        padded = bucket_length(longest, limit)
        for rows in range(1, max_batch_size + 1):
            if rows == 1 or rows * padded <= max_batch_tokens:
                out.add((rows, padded))
    return out


def test_the_ladder_lists_every_rung_bucket_length_can_give():
    assert ladder(512) == sorted({bucket_length(n) for n in range(1, 513)})
    assert ladder(510)[-2:] == [448, 510]  # a model's own limit is the top rung
    assert ladder(8) == [8] and ladder(5) == [5]


@pytest.mark.parametrize(("tokens", "size", "limit"), [(16384, 128, 512), (4096, 32, 512), (300, 64, 128)])
def test_the_bound_counts_exactly_the_shapes_the_limits_allow(tokens, size, limit):
    assert shapes_bound(tokens, size, limit) == len(every_shape(tokens, size, limit))


def test_the_planner_never_forms_a_shape_outside_the_bound():
    allowed = every_shape(DEFAULTS.max_batch_tokens, DEFAULTS.max_batch_size, 512)
    rnd = random.Random(7)
    met = set()
    for _ in range(300):
        lengths = [rnd.randint(1, 512) for _ in range(rnd.randint(1, 300))]
        for b in plan_batches(lengths, DEFAULTS.max_batch_tokens, DEFAULTS.max_batch_size, 0.0,
                              padded=lambda n: bucket_length(n, 512)):
            met.add((len(b), bucket_length(max(lengths[i] for i in b), 512)))
    assert met <= allowed and len(met) > 200  # and the check saw many of them


def test_auto_is_no_cache_and_says_what_a_cache_for_every_shape_would_take():
    entries, why = resolve_capacity("auto", length_buckets=True, max_batch_tokens=16384, max_batch_size=128,
                                    environ={})
    assert entries == 0 and "no cache" in why
    # the three models' shapes with the default budget, and the C heap they would hold
    assert 3 * shapes_bound(16384, 128, 512) == 3 * 2021 == 6063 and mib(6063) == 166
    assert "6063 entries, ≤ 166 MiB" in why


def test_auto_is_no_cache_without_the_ladder_too_and_the_environments_value_wins():
    off, why = resolve_capacity("auto", length_buckets=False, max_batch_tokens=16384, max_batch_size=128, environ={})
    assert off == 0 and "length_buckets off" in why
    given, why = resolve_capacity("auto", length_buckets=True, max_batch_tokens=16384, max_batch_size=128,
                                  environ={ENV: "8192"})
    assert given == 8192 and "from the environment" in why


def test_a_number_wins_over_the_environment():
    assert resolve_capacity("100", length_buckets=True, max_batch_tokens=16384, max_batch_size=128,
                            environ={ENV: "8192"})[0] == 100


def test_a_second_plan_in_one_process_is_resolved_afresh_not_taken_for_the_operators_value():
    env: dict[str, str] = {}
    apply(6063, env)
    assert env == {ENV: "6063"}
    off, why = resolve_capacity("auto", length_buckets=False, max_batch_tokens=16384, max_batch_size=128, environ=env)
    assert off == 0 and "environment" not in why


def test_the_cpu_plan_carries_the_size_and_logs_it_and_cuda_leaves_onednn_alone(ds):
    cpu = resolve_plan("cpu", "fp32", "torch", ds, environ={})
    assert cpu.onednn_cache == 0 and "onednn_cache=0" in cpu.log_line()
    cuda = resolve_plan("cuda", "fp16", "torch", ds, cuda_available=lambda: True, environ={})
    assert cuda.onednn_cache is None and "onednn_cache" not in cuda.log_line()


@pytest.mark.parametrize("bad", ["lots", "-1", "1.5", ""])
def test_a_value_that_is_neither_auto_nor_a_count_fails_at_start_with_what_to_give(bad):
    if bad == "":
        assert Settings.from_env({"WENMO_ONEDNN_PRIMITIVE_CACHE": bad}).onednn_primitive_cache == "auto"
        return
    with pytest.raises(ConfigError, match="give auto or a whole number of entries"):
        Settings().replace(onednn_primitive_cache=bad)


CHILD = """
import sys, tempfile
from pathlib import Path
from app.composition import make_plan
from app.config import Settings
from app.models.embedding import EmbeddingAdapter
plan = make_plan(Settings(device="cpu", engine="torch", onednn_primitive_cache=sys.argv[2]))
adapter = EmbeddingAdapter(Path(sys.argv[1]), plan)
tok = adapter.tokenizer
for rows, length in ((2, 10), (3, 30), (2, 10)):
    ids = [tok.cls_token_id] + [tok.convert_tokens_to_ids("文")] * (length - 2) + [tok.sep_token_id]
    print("FORWARD", rows, length, flush=True)
    adapter.forward_batch([(ids, [0] * length)] * rows)
"""


def creations(tiny_dirs, setting: str) -> list[list[str]]:
    """oneDNN's primitive creations (its verbose log: cache_miss / cache_hit) during each of the child's forwards."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(tiny_dirs["embed"]), setting], capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ, "ONEDNN_VERBOSE": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    forwards: list[list[str]] = []
    for line in out.stdout.splitlines():
        if line.startswith("FORWARD"):
            forwards.append([])
        elif forwards and ",primitive,create:" in line:
            forwards[-1].append(line.split(",")[3].removeprefix("create:"))
    return forwards


def test_the_size_reaches_onednn_before_the_first_primitive_and_a_shape_is_one_primitive(tiny_dirs):
    import torch

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: there is no primitive cache to size")
    roomy = creations(tiny_dirs, "6063")
    # Each new shape compiles one primitive (GELU), which the second layer finds in the cache: the bound's
    # one-entry-per-shape; the first shape again is a hit.
    assert roomy == [["cache_miss", "cache_hit"], ["cache_miss", "cache_hit"], ["cache_hit", "cache_hit"]]
    tight = creations(tiny_dirs, "1")  # room for one: the second shape evicted the first
    assert tight[2] == ["cache_miss", "cache_hit"]
    # 0 is a size (no cache: every creation compiles), not "leave oneDNN's default": a plan once took 0 for
    # unset and the operator's 0 reached nobody
    assert creations(tiny_dirs, "0") == [["cache_miss", "cache_miss"]] * 3
    assert creations(tiny_dirs, "auto") == [["cache_miss", "cache_miss"]] * 3  # auto: no cache
