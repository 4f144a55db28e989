"""Measurement tools: `python -m app bench` (engine throughput, latency, memory), `python -m app loadtest`
(the running service under concurrent users) and `python -m app bench-batching` (two real servers, batching
across requests on and off, under the same concurrent short-text load).

Layout: pure modules (`workload`, `stats`, `flops`, `prometheus`) import neither torch nor httpx;
`matmul`, `memory`, `baselines`, `engine_bench` and `worker` run inside one measurement subprocess each;
`suite` orchestrates those subprocesses; `loadtest` is the async HTTP load generator; `batching` starts the
two `serve` children and loads them through `loadtest`'s client; `report` and `plot` turn results into tables
and PNG charts; `cli` holds the subcommands' flags and entry points.
`app/cli.py` imports `bench.cli` inside the subcommands only (so `python -m app bench` works and serving never
loads the measurement code); nothing else under `app/` imports this package.
"""
