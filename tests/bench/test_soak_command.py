"""`python -m app soak` end to end: it starts a real demo server, soaks it with every kind of request, judges
the memory rate and, traced, names the allocation sites that grew; nothing of it outlives the command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def soak_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_STATE_DIR": str(tmp_path / "state"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    return env


def soak(tmp_path, *args: str, check: bool = False) -> tuple[dict, str]:
    out_json = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "-m", "app", "soak", "--demo", "--json", str(out_json), *args],
                          cwd=ROOT, env=soak_env(tmp_path), capture_output=True, timeout=600)
    assert out_json.exists(), proc.stderr.decode()[-3000:]
    r = json.loads(out_json.read_text(encoding="utf-8"))
    # --check: exit 1 exactly when the soak fails; without it, 0 either way.
    assert proc.returncode == (1 if check and not r["pass"] else 0), proc.stderr.decode()[-3000:]
    return r, proc.stdout.decode()


def test_soak_command_sends_every_kind_and_judges_the_memory_rate(tmp_path):
    png = tmp_path / "soak.png"
    r, text = soak(tmp_path, "--soak-users", "4", "--soak-s", "10", "--soak-warmup-s", "3", "--metrics-interval-s",
                   "0.5", "--settle-every-s", "1.5", "--settle-s", "0.3", "--plot", str(png), "--check", check=True)
    st = r["soak"]
    assert set(st["by_kind"]) == {"vectors", "similarity", "rerank", "nlu", "ui", "metrics", "badlogin"}
    for kind, counts in st["by_kind"].items():
        assert counts["requests"] > 0, kind
    assert st["by_kind"]["badlogin"]["ok"] == st["by_kind"]["badlogin"]["requests"]  # every wrong password: 401
    assert r["failures"] == 0, r["error_samples"]
    v = st["verdict"]
    rss = v["gauges"]["wenmo_process_resident_memory_bytes"]
    assert v["warmup_s"] == 3 and v["budget_mib_per_day"] == 100 and rss["points"] >= 3
    # Fitted: the settled samples (users paused, nothing in flight) after the warm-up, the last one after the load.
    settled = st["settled_samples"]
    assert v["series"] == "settled" and rss["points"] == sum(t >= 3 for t, _g, _n in settled)
    assert settled[-1][2] == st["requests"] and st["paused_s"] > 0
    assert v["rate_rps"] > 0 and st["rate_under_load_rps"] > st["attempted_rps"]  # the pauses left out
    assert rss["mib_per_24h"] == pytest.approx(rss["fit"]["slope_mib_per_request"] * v["rate_rps"] * 86400)
    assert r["pass"] == (rss["pass"] and all(g["pass"] is not False for g in v["gauges"].values()))
    assert "soak memory verdict" in text and "MiB / 24 h" in text and "settled samples" in text and "heap" not in r
    assert png.stat().st_size > 10_000
    assert r["server_exit"] == 0  # the server drained and exited on its own


def test_soak_command_traced_names_the_allocation_sites_that_grew(tmp_path):
    r, text = soak(tmp_path, "--soak-users", "2", "--soak-s", "10", "--soak-warmup-s", "3", "--soak-mix",
                   "vectors=1,metrics=1", "--trace-heap", "--top-sites", "5")
    heap = r["heap"]
    assert heap["requests_between"] > 0 and 0 < len(heap["grown_sites"]) <= 5
    assert all(g["bytes"] > 0 and g["stack"] and ":" in g["stack"][0] for g in heap["grown_sites"])
    assert heap["traced_mib_after"] > 0 and "traced Python heap" in text
    snapshots = sorted((Path(r["work_dir"]) / "heap").glob("*.tracemalloc"))
    assert len(snapshots) == 2  # one at the end of the warm-up, one at the end


def long_soak(tmp_path: Path, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    """A soak of 2 users for 300 s, in the background: the tests below end it long before."""
    return subprocess.Popen([sys.executable, "-m", "app", "soak", "--demo", "--soak-users", "2", "--soak-s", "300",
                             *args], cwd=ROOT, env=soak_env(tmp_path), stdout=stdout, stderr=subprocess.PIPE,
                            text=True)


def servers_once_users_start(proc: subprocess.Popen) -> list[psutil.Process]:
    """The soak's server processes, read once its users start (they start once the server answers)."""
    for line in proc.stderr:
        if "users for" in line:
            break
    return [p for p in psutil.Process(proc.pid).children() if "serve" in " ".join(p.cmdline())]


def test_a_soak_stopped_with_sigterm_stops_its_server(tmp_path):
    """The server runs in its own session (so stopping it stops its group) and does not get the soak's signals:
    before, `kill SOAK_PID` ended the soak and left its server serving, unowned, for good."""
    proc = long_soak(tmp_path)
    servers: list[psutil.Process] = []
    try:
        servers = servers_once_users_start(proc)
        assert len(servers) == 1 and servers[0].is_running()
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        assert not servers[0].is_running() or servers[0].status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
        for server in servers:  # what the bug left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)


def test_a_soak_whose_server_dies_stops_at_once_and_says_why(tmp_path):
    """2026-11-28: a soak's server was killed five minutes in, and the soak went on for the other 115 minutes,
    2.9 million refused connections, before it reported anything. Now its users stop at the next request."""
    out_json = tmp_path / "soak.json"
    proc = long_soak(tmp_path, "--json", str(out_json), stdout=subprocess.PIPE)
    try:
        (server,) = servers_once_users_start(proc)
        time.sleep(1)
        started = time.monotonic()
        server.kill()
        out, _ = proc.communicate(timeout=120)
        assert time.monotonic() - started < 60  # not the 300 s asked for
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
    r = json.loads(out_json.read_text(encoding="utf-8"))
    assert r["pass"] is False and "exited with status" in r["server_gone"]
    assert r["soak"]["elapsed_s"] < 60
    assert "soak stopped early: the server with the soak's settings exited" in out
