"""`wenmo download` (README "Scaling out"): the models the settings name, made complete in the model cache once.

Kubernetes runs it as the init container of every replica on one shared model volume, so what matters is what it
does when the models are already there (nothing: no network), when another replica is downloading (it waits for
that one, then finds the models complete), and when it cannot do its job (a message, not a traceback). The real
ModelScope download cannot run here (no route to the hub): the download itself is a fake in the unit tests below;
the CLI runs as a real child process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import DEFAULT_CROSS_MODEL, DEFAULT_EMBED_MODEL, DEFAULT_NLU_MODEL
from app.engine.loading import COMPLETE_MARKER, DOWNLOAD_LOCK, download_models
from app.errors import ModelUnavailableError

ROOT = Path(__file__).resolve().parents[2]
IDS = {"embed": DEFAULT_EMBED_MODEL, "cross": DEFAULT_CROSS_MODEL, "nlu": DEFAULT_NLU_MODEL}


def complete(cache: Path, model_id: str) -> Path:
    target = cache / model_id
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / COMPLETE_MARKER).touch()
    return target


def download_cli(cache: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    # An unreachable hub: if the command tried to download, it would fail (and say so) instead of passing.
    env.update({"WENMO_MODEL_DIR": str(cache), "PYTHONPATH": str(ROOT), "MODELSCOPE_DOMAIN": "127.0.0.1:9"})
    return subprocess.Popen([sys.executable, "-m", "app", "download", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_models_already_complete_are_left_alone_without_network(tmp_path):
    cache = tmp_path / "models"
    targets = {role: complete(cache, i) for role, i in IDS.items()}
    before = {p: p.stat().st_mtime_ns for t in targets.values() for p in t.iterdir()}
    proc = download_cli(cache)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"{role}: {IDS[role]} already complete in {targets[role]}" for role in IDS]
    assert {p: p.stat().st_mtime_ns for t in targets.values() for p in t.iterdir()} == before
    assert sorted(p.name for p in cache.iterdir()) == sorted([DOWNLOAD_LOCK, "iic"])


def test_a_second_download_waits_for_the_first_then_finds_the_models(tmp_path):
    cache = tmp_path / "models"
    cache.mkdir()
    with open(cache / DOWNLOAD_LOCK, "a") as held:  # another replica's init container, mid-download
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = download_cli(cache)
        first = proc.stdout.readline()
        assert first.startswith(f"waiting for another download into {cache} to finish"), first
        for i in IDS.values():  # that replica's download completes, then it lets go
            complete(cache, i)
        fcntl.flock(held, fcntl.LOCK_UN)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"{role}: {IDS[role]} already complete in {cache / IDS[role]}" for role in IDS]


def test_a_read_only_cache_is_a_message_naming_the_fix(tmp_path):
    cache = tmp_path / "file-not-dir"
    cache.write_text("")  # not a directory: cannot be created or written, even as root
    proc = download_cli(cache / "models")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert err.startswith(f"error: cannot write the model cache {cache / 'models'}"), err
    assert "WENMO_MODEL_DIR" in err and "read-write" in err and "Traceback" not in err


def test_local_directories_are_not_downloaded_and_missing_ids_are_downloaded_once(tmp_path):
    local = tmp_path / "my-nlu"
    local.mkdir()
    cache = tmp_path / "models"
    complete(cache, DEFAULT_EMBED_MODEL)
    calls, lines = [], []

    def fake_download(model_id: str, target: Path) -> None:
        calls.append(model_id)
        (target / "config.json").write_text("{}")

    models = {"embed": DEFAULT_EMBED_MODEL, "cross": DEFAULT_CROSS_MODEL, "nlu": str(local)}
    got = download_models(models, cache, lines.append, download=fake_download)
    assert calls == [DEFAULT_CROSS_MODEL]
    assert got == {"embed": cache / DEFAULT_EMBED_MODEL, "cross": cache / DEFAULT_CROSS_MODEL, "nlu": local.resolve()}
    assert (cache / DEFAULT_CROSS_MODEL / COMPLETE_MARKER).exists()
    assert lines == [f"nlu: {local} is a local directory; nothing to download",
                     f"embed: {DEFAULT_EMBED_MODEL} already complete in {cache / DEFAULT_EMBED_MODEL}",
                     f"cross: downloading {DEFAULT_CROSS_MODEL} from ModelScope into {cache / DEFAULT_CROSS_MODEL}",
                     f"cross: {DEFAULT_CROSS_MODEL} complete in {cache / DEFAULT_CROSS_MODEL}"]
    calls.clear()
    download_models(models, cache, lines.append, download=fake_download)  # the next replica: nothing to fetch
    assert calls == []


def test_a_failed_download_raises_the_message_and_leaves_no_marker(tmp_path):
    def offline(model_id: str, target: Path) -> None:
        raise ConnectionError("Name or service not known")

    with pytest.raises(ModelUnavailableError) as e:
        download_models({"embed": DEFAULT_EMBED_MODEL}, tmp_path, lambda _line: None, download=offline)
    assert "could not be downloaded from ModelScope (ConnectionError)" in e.value.message
    assert not (tmp_path / DEFAULT_EMBED_MODEL / COMPLETE_MARKER).exists()
