"""Pointing a role at another checkpoint while the service runs (Service.serve_checkpoint, app/checkpoints.py):
the new weights answer, a rollback brings the old answers back exactly, only the tuned directory and the original
are served (no path, `..` or link out of it), a checkpoint of another role is refused, and one swap runs at a
time. Real tiny checkpoints; the "tuned" one is a copy with perturbed weights (fixtures.build_perturbed)."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.composition import build_service
from app.config import Settings
from app.errors import CheckpointRefusedError, ConflictError, InputError
from app.models.fixtures import build_perturbed

TEXTS = ["今天天气很好", "我喜欢这部电影", "北京"]


@pytest.fixture()
def setup(tmp_path, tiny_dirs, cpu_plan):
    demo = tmp_path / "demo-models"
    dirs = {role: Path_copy(path, demo / path.name) for role, path in tiny_dirs.items()}
    tuned = tmp_path / "models" / "tuned"
    tuned.mkdir(parents=True)
    service = build_service(Settings(model_dir=str(tmp_path / "models")), ["embed", "cross"], demo_dirs=dirs,
                            plan=cpu_plan)
    yield service, dirs, tuned, tmp_path
    service.close()


def Path_copy(source, target):  # noqa: N802 - reads as a path constructor
    shutil.copytree(source, target)
    return target


def test_a_swap_serves_the_new_weights_and_a_rollback_the_old_ones_exactly(setup):
    service, dirs, tuned, _ = setup
    before = service.embed(TEXTS).vectors
    build_perturbed(dirs["embed"], tuned / "embed-1")
    state = service.serve_checkpoint("embed", "embed-1")
    assert (state.name, state.path, state.previous) == ("tuned/embed-1", os.path.realpath(tuned / "embed-1"),
                                                       os.path.realpath(dirs["embed"]))
    after = service.embed(TEXTS)
    assert after.model == "tuned/embed-1"
    assert np.abs(after.vectors - before).max() > 0.05  # measurably other weights
    assert [m.name for m in service.models()] == ["tuned/embed-1", "demo:structbert"]
    assert {s.role: s.name for s in service.serving()} == {"embed": "tuned/embed-1", "cross": "demo:structbert"}

    back = service.rollback_checkpoint("embed")
    assert (back.name, back.previous) == ("demo:gte", state.path)
    again = service.embed(TEXTS)
    assert again.model == "demo:gte"
    np.testing.assert_array_equal(again.vectors, before)
    assert service.rollback_checkpoint("embed").name == "tuned/embed-1"  # a second rollback undoes the first
    assert service.serve_checkpoint("embed", "original").name == "demo:gte"


def test_the_cross_encoder_swaps_too_and_the_tuned_list_holds_each_roles_own(setup):
    service, dirs, tuned, _ = setup
    before = service.similarity("今天天气很好", TEXTS, rerank=True)
    build_perturbed(dirs["cross"], tuned / "cross-1", scale=1.0)
    build_perturbed(dirs["embed"], tuned / "embed-1")
    (tuned / ".embed-2-writing").mkdir()  # a job still writing: not a checkpoint yet
    assert service.tuned_checkpoints("cross") == [os.path.realpath(tuned / "cross-1")]
    assert service.tuned_checkpoints("embed") == [os.path.realpath(tuned / "embed-1")]
    service.serve_checkpoint("cross", str(tuned / "cross-1"))  # an absolute path under the tuned directory
    after = service.similarity("今天天气很好", TEXTS, rerank=True)
    assert after.cross_model == "tuned/cross-1"
    scores = lambda r: sorted((h.index, h.cross_score) for h in r.results)  # noqa: E731
    assert max(abs(a[1] - b[1]) for a, b in zip(scores(before), scores(after), strict=True)) > 1e-3


def test_only_the_tuned_directory_and_the_original_are_served(setup):
    service, dirs, tuned, tmp_path = setup
    elsewhere = build_perturbed(dirs["embed"], tmp_path / "elsewhere")  # a valid checkpoint, outside
    (tuned / "link-out").symlink_to(elsewhere)
    refused = [str(elsewhere), "../elsewhere", "../../elsewhere", "link-out", str(tuned / "link-out"),
               str(tmp_path / "no-such-dir"), "/etc", str(tuned), "~"]
    messages = set()
    for requested in refused:
        with pytest.raises(CheckpointRefusedError) as e:
            service.serve_checkpoint("embed", requested)
        assert e.value.http_status == 403
        messages.add(e.value.message.replace(repr(requested), "X"))
    # One message whether or not the path exists: the answer tells nothing about files outside.
    assert len(messages) == 1, messages
    assert "tuned directory" in messages.pop()
    assert service.serving()[0].name == "demo:gte"  # nothing changed


def test_a_checkpoint_of_another_role_or_a_missing_one_is_refused_with_the_reason(setup):
    service, dirs, tuned, _ = setup
    build_perturbed(dirs["cross"], tuned / "cross-1")
    with pytest.raises(InputError, match="is a cross checkpoint.*embed role serves sentence-embedding"):
        service.serve_checkpoint("embed", "cross-1")
    with pytest.raises(InputError, match="no such directory under the tuned directory"):
        service.serve_checkpoint("embed", "embed-404")
    with pytest.raises(InputError, match="no model role 'nlu'"):
        service.serve_checkpoint("nlu", "original")
    with pytest.raises(InputError, match="nothing to roll back to"):
        service.rollback_checkpoint("embed")
    with pytest.raises(InputError, match="non-empty"):
        service.serve_checkpoint("embed", " ")
    (tuned / "broken").mkdir()
    (tuned / "broken" / "configuration.json").write_text('{"task": "sentence-embedding"}')
    with pytest.raises(InputError, match="cannot be loaded as the embed model.*demo:gte keeps serving"):
        service.serve_checkpoint("embed", "broken")
    assert service.serving()[0].name == "demo:gte"


def test_one_swap_at_a_time(setup):
    service, dirs, tuned, _ = setup
    build_perturbed(dirs["embed"], tuned / "embed-1")
    load, entered, release = service.loader, threading.Event(), threading.Event()

    def held_load(*args):
        entered.set()
        assert release.wait(10)
        return load(*args)

    service.loader = held_load
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(service.serve_checkpoint, "embed", "embed-1")
        assert entered.wait(10)
        with pytest.raises(ConflictError, match="already running") as e:
            service.serve_checkpoint("cross", "original")
        assert e.value.http_status == 409
        assert service.embed(TEXTS).model == "demo:gte"  # serving goes on while the new one loads
        release.set()
        assert first.result(30).name == "tuned/embed-1"
    assert service.embed(TEXTS).model == "tuned/embed-1"
