"""oneDNN's primitive cache on the CPU: none by default, so that the C heap keeps no per-shape state.

Why: on the CPU, torch runs GELU through oneDNN, which compiles one primitive per tensor shape and keeps it in a
least-recently-used cache of 1,024 entries (oneDNN's default; its variable `ONEDNN_PRIMITIVE_CACHE_CAPACITY`),
~28 KiB each (measured: 3,000 GELU shapes kept 27.8 KiB each in the C heap, none with the cache at 0). A server
meets more shapes than that — rows × padded length, per model: even with the length ladder (app/engine/shapes.py)
6,063 with the default budget — so the default cache kept evicting a primitive and compiling another among the
activations' freed chunks, and the heap drifted (0.044 MiB per 1,000 requests after warm-up). A cache with room for
every shape (`--onednn-primitive-cache 6063`, ≤ 166 MiB) stops the eviction but fills for hours — rare (rows,
length) pairs keep arriving, ~7.5 bytes a request in a 90-minute soak — and pins 200+ MiB of freed heap among its
entries. With no cache (0) the one-hour soak's C heap was flat (in use, free and system: 0.0000 MiB per 1k
requests) and ~210 MiB smaller. What it costs: each GELU compiles its primitive again, +92 µs a call on a short
query's tensors at the real models' width 1,024, +109 µs across the ladder's shapes (`python -m bench.onednn_cost
--gelu-only`), one call a layer — about 2 % of a one-short-query forward on a 2-core VM (~5.4 ms a layer) and less
for larger batches; whole forwards timed 0.97–1.14×, within the VM's noise. README, "Memory over days".

`auto` is therefore 0, unless the environment sets oneDNN's own variable, which wins (as MALLOC_ARENA_MAX does in
app/allocator.py); a number is that many entries. `shapes_bound` counts the (rows, padded length) pairs the batch
planner can form, for an operator who would rather trade the memory for the compile: the start-up line says how
many entries (and MiB) a cache for every shape would take.

oneDNN reads the variable once, when the first primitive is created: `apply` runs where every model is prepared
(app/engine/wrapping.py's prepare_module), before any model runs a forward — the server, the CLI and the bench alike.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from app.engine.shapes import ladder

ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ENTRY_KIB = 28  # C heap per cached GELU primitive, measured (see above)
ROLES = 3  # embedder, cross-encoder, RexUniNLU: each may meet every shape
LONGEST = 512  # tokens a text may have in the models Wenmo serves (each model's own cap, when none is set)


def shapes_bound(max_batch_tokens: int, max_batch_size: int, max_length: int = 0) -> int:
    """The (rows, padded length) pairs the batch planner can form for one model with the ladder on: every rung,
    times every row count from 1 to what the token budget and the size cap allow at that rung (one row always)."""
    return sum(min(max_batch_size, max(1, max_batch_tokens // rung)) for rung in ladder(max_length or LONGEST))


def resolve_capacity(setting: str, *, length_buckets: bool, max_batch_tokens: int, max_batch_size: int,
                     max_length: int = 0, environ: MutableMapping[str, str] | None = None) -> tuple[int, str]:
    """(entries, why) for `--onednn-primitive-cache`: a number as given; `auto` as the environment says, else 0."""
    env = os.environ if environ is None else environ
    if setting != "auto":
        return int(setting), f"onednn_primitive_cache {setting}: as given"
    if env.get(ENV, "").strip().isdigit() and env[ENV] != _applied.get(id(env)):  # not this process's own value
        return int(env[ENV]), f"onednn_primitive_cache auto: {ENV}={env[ENV]} from the environment"
    if length_buckets:
        every = ROLES * shapes_bound(max_batch_tokens, max_batch_size, max_length)
        room = f"a cache for every shape the ladder allows would take {every} entries, ≤ {mib(every)} MiB"
    else:
        room = "with length_buckets off no cache holds every shape"
    return 0, f"onednn_primitive_cache auto: 0, no cache — each GELU compiles its primitive, the heap keeps none " \
              f"({room})"


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
