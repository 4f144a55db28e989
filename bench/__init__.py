"""Measurement tools: `python -m app bench` (engine throughput, latency, memory) and `python -m app loadtest`
(the running service under concurrent users).

Layout: pure modules (`workload`, `stats`, `flops`, `prometheus`) import neither torch nor httpx;
`matmul`, `memory`, `baselines`, `engine_bench` and `worker` run inside one measurement subprocess each;
`suite` orchestrates those subprocesses; `loadtest` is the async HTTP load generator; `report` and `plot`
turn results into tables and PNG charts; `cli` holds the two subcommands' flags and entry points.
`app/cli.py` imports `bench.cli` inside the two subcommands only (so `python -m app bench` works and serving never
loads the measurement code); nothing else under `app/` imports this package.
"""
