"""Wenmo 文墨: Chinese text semantics on one GPU machine."""

from app import allocator as _allocator

# Every entry point (python -m app, wenmo, the server the launcher starts, tests) imports this package before
# anything that starts threads (numpy's BLAS pool, torch): the only moment glibc's arena limit can still be set.
_allocator.tune()
