"""What a stream of UI calls leaves behind in the server's Python heap, measured with the server's own heap
snapshots (WENMO_HEAP_SNAPSHOT_DIR + SIGUSR1, app/heapsnapshots.py) around N calls once it is warm.

Before the fix Gradio kept a ~100 KB copy of the page's state for each of up to 10,000 sessions, and every
/gradio_api/call opens one: each call below kept ~100 KB (measured: 41 MiB traced over ~250 UI calls in a
mixed soak). With `--ui-sessions` the copies are bounded; what each call still leaves (Gradio's per-session
message queue, kept for 2,000 sessions; the record of each exported file, kept until the file expires) is a
few KB."""

from __future__ import annotations

import json
import signal
import time
import tracemalloc
from pathlib import Path

from server_harness import WenmoServer

from app.heapsnapshots import diff_by_site, traced_bytes

SESSIONS = 8
# Gradio's message channels are kept for max(sessions, backlog) sessions; the backlog is 4 × (max_concurrent +
# max_queue) + 16 = 32 with LIMITS (app/web/server.py).
LIMITS = ["--max-concurrent", "2", "--max-queue", "2"]
WARM_CALLS = 40  # past both caps: the bounded structures are full before the first snapshot
MEASURED_CALLS = 60
KEPT_PER_CALL_LIMIT = 20 * 1024  # bytes; was ~100 KB


def snapshot(server: WenmoServer, directory: Path) -> tracemalloc.Snapshot:
    before = set(directory.glob("*.tracemalloc"))
    server.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(directory.glob("*.tracemalloc")) - before
        if new:
            return tracemalloc.Snapshot.load(str(new.pop()))
        time.sleep(0.1)
    raise TimeoutError(f"no heap snapshot:\n{server.logs()[-2000:]}")


def ui_call(client, i: int) -> None:
    if i % 2:
        name, data = "nlu", [f"张三{i}在北京工作", json.dumps({"人物": None, "地理位置": None}), "auto"]
    else:
        name, data = "embed", [f"第{i}条\n北京是中国的首都", None, True, False]
    event = client.post(f"/gradio_api/call/{name}", json={"data": data}).json()["event_id"]
    stream = client.get(f"/gradio_api/call/{name}/{event}")
    assert stream.text.startswith("event: complete"), stream.text[:300]


def test_ui_calls_keep_a_few_kb_each_once_warm(server, tmp_path):
    heap = tmp_path / "heap"
    s = WenmoServer(tmp_path / "state", ["--ui-sessions", str(SESSIONS), *LIMITS],
                    env={"WENMO_HEAP_SNAPSHOT_DIR": str(heap)}, template=server.state_dir)
    try:
        s.wait_ready()
        with s.client(timeout_s=120) as c:
            for i in range(WARM_CALLS):
                ui_call(c, i)
            first = snapshot(s, heap)
            for i in range(WARM_CALLS, WARM_CALLS + MEASURED_CALLS):
                ui_call(c, i)
            last = snapshot(s, heap)
    finally:
        s.close()
    kept = (traced_bytes(last) - traced_bytes(first)) / MEASURED_CALLS
    sites = "\n".join(f"{g['bytes']:>9} B  {' <- '.join(g['stack'])}" for g in diff_by_site(first, last, top=8))
    assert kept < KEPT_PER_CALL_LIMIT, f"{kept:.0f} bytes kept per UI call; grown most:\n{sites}"
    # Gradio's queue itself keeps nothing per finished call: before app/web/queuesessions.py, an empty set per
    # call (its session's pending event ids) at gradio/queueing.py, one block per call at least, for ever.
    queue_sites = [s for s in last.compare_to(first, "lineno")
                   if s.traceback[0].filename.replace("\\", "/").endswith("gradio/queueing.py") and s.count_diff]
    queue_blocks = sum(s.count_diff for s in queue_sites)
    where = "\n".join(f"{s.count_diff:>5} blocks {s.size_diff:>7} B  line {s.traceback[0].lineno}" for s in queue_sites)
    assert queue_blocks < MEASURED_CALLS // 4, f"{queue_blocks} blocks kept at gradio/queueing.py over " \
                                               f"{MEASURED_CALLS} calls:\n{where}"
