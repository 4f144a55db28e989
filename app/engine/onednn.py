"""oneDNN's primitive cache, sized so that it holds every shape the length ladder lets a CPU server meet.

Why: on the CPU, torch runs GELU through oneDNN, which compiles one primitive per tensor shape and keeps it in a
least-recently-used cache of 1,024 entries (oneDNN's default; its variable `ONEDNN_PRIMITIVE_CACHE_CAPACITY`).
With the ladder on (app/engine/shapes.py) a server meets a closed set of shapes — rows × padded length, per model —
but across three models and up to 128 rows that set is larger than 1,024, so the cache kept evicting a primitive
and compiling another among the activations' freed chunks, and the heap drifted: the 40-minute soak with the
default cache rose 0.044 MiB per 1,000 requests after warm-up; the same soak with room for every shape (8,192
entries) was flat for its last 1,400 s (README, "Memory over days").

The size (`auto`): one entry per (rows, padded length) the batch planner can form for each of the three roles —
measured with ONEDNN_VERBOSE=2, one fp32 forward of the GTE or StructBERT encoder creates one primitive per
new shape (GELU's eltwise; the matmuls run in MKL, outside oneDNN); RexUniNLU's encoder was not measured (its
windows are 32 at most, so even two primitives per shape would fit the headroom below). Each entry holds ~28 KiB
(measured: 3,000 GELU shapes kept 27.8 KiB each in the C heap, none with the cache at 0), so the bound is
stated in MiB too: with the default budget (16,384 tokens, 128 rows, 512 tokens a text) 6,063 entries, ≤ 166 MiB if
every role met every shape — a ceiling the heap levels off under, where the default cache never levels off.
The GTE and StructBERT encoders share their GELU shapes (same widths), so real servers hold fewer.
With the ladder off there is no closed set: `auto` leaves oneDNN's default. A value in the environment
(oneDNN's own variable) wins over `auto`, as MALLOC_ARENA_MAX does in app/allocator.py.

oneDNN reads the variable once, when the first primitive is created: `apply` runs where every model is prepared
(app/engine/wrapping.py's prepare_module), before any model runs a forward — the server, the CLI and the bench alike.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from app.engine.shapes import ladder

ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_DEFAULT = 1024
ENTRY_KIB = 28  # C heap per cached GELU primitive, measured (see above)
ROLES = 3  # embedder, cross-encoder, RexUniNLU: each may meet every shape
LONGEST = 512  # tokens a text may have in the models Wenmo serves (each model's own cap, when none is set)


def shapes_bound(max_batch_tokens: int, max_batch_size: int, max_length: int = 0) -> int:
    """The (rows, padded length) pairs the batch planner can form for one model with the ladder on: every rung,
    times every row count from 1 to what the token budget and the size cap allow at that rung (one row always)."""
    return sum(min(max_batch_size, max(1, max_batch_tokens // rung)) for rung in ladder(max_length or LONGEST))


def resolve_capacity(setting: str, *, length_buckets: bool, max_batch_tokens: int, max_batch_size: int,
                     max_length: int = 0, environ: MutableMapping[str, str] | None = None) -> tuple[int, str]:
    """(entries, why) for `--onednn-primitive-cache`: a number as given; `auto` as the environment says, else sized
    to the ladder's shapes, else (ladder off) oneDNN's default."""
    env = os.environ if environ is None else environ
    if setting != "auto":
        return int(setting), f"onednn_primitive_cache {setting}: as given"
    if env.get(ENV, "").strip().isdigit() and env[ENV] != _applied.get(id(env)):  # not this process's own value
        return int(env[ENV]), f"onednn_primitive_cache auto: {ENV}={env[ENV]} from the environment"
    if not length_buckets:
        return ONEDNN_DEFAULT, (f"onednn_primitive_cache auto: oneDNN's default {ONEDNN_DEFAULT} (length_buckets off: "
                                "no closed set of shapes to size it to)")
    entries = max(ONEDNN_DEFAULT, ROLES * shapes_bound(max_batch_tokens, max_batch_size, max_length))
    return entries, (f"onednn_primitive_cache auto: {entries} entries, every shape the ladder allows "
                     f"(≤ {mib(entries)} MiB)")


def mib(entries: int) -> int:
    """The C heap `entries` cached primitives may hold at most, MiB, rounded up."""
    return -(-entries * ENTRY_KIB // 1024)


def apply(entries: int, environ: MutableMapping[str, str] | None = None) -> None:
    """Set oneDNN's variable for this process (os.environ reaches the C library's getenv). Effective only before
    the first primitive is created: oneDNN reads it once."""
    env = os.environ if environ is None else environ
    env[ENV] = _applied[id(env)] = str(entries)


# What `apply` set, per mapping: a second plan in the same process (tests, the bench) is resolved afresh, not taken
# for the operator's choice.
_applied: dict[int, str] = {}
