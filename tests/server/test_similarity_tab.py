"""The similarity tab's handler, in process, on a real service over the tiny checkpoints: one click embeds the
source and the candidates once (the heatmap is drawn from the vectors the ranking computed), and those vectors
give the matrix `Service.pairwise` computes on its own, to 1e-6.

Passes are counted where they cannot be missed: a hook on the embedding network counts the texts it runs."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

from app.composition import build_service
from app.config import Settings
from app.engine.limiter import ConcurrencyLimiter
from app.web.context import ServerContext
from app.web.lifecycle import Lifecycle
from app.web.ui import similarity
from app.web.ui.common import guarded
from app.web.ui.filestore import FileStore

SOURCE = "今天天气很好"
CANDIDATES = ["今天天气不错", "明天会下雨", "我喜欢看电影", "北京天安门", "上海"]


@pytest.fixture(scope="module")
def service(tiny_dirs, cpu_plan):
    return build_service(Settings(), ["embed", "cross"], demo_dirs=tiny_dirs, plan=cpu_plan)


@pytest.fixture()
def click(service, tmp_path):
    """The tab's button: the handler as build() wires it, behind the same guard."""
    lifecycle = Lifecycle()
    lifecycle.set_ready(service)
    ctx = ServerContext(Settings(), lifecycle, ConcurrencyLimiter(1, 8))
    store = FileStore(2**20, root=tmp_path / "files")
    return guarded(ctx, "similarity")(functools.partial(similarity.run, ctx, store))


@pytest.fixture()
def texts_run(service):
    """Texts each model's network runs, counted from inside the network (a hook on its forward)."""
    counts = {"embed": 0, "cross": 0}

    def counter(role):  # noqa: ANN001, ANN202
        def hook(module, args, kwargs):  # noqa: ANN001, ANN202
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            counts[role] += int(ids.shape[0])
        return hook

    handles = [service.embedder.model.register_forward_pre_hook(counter("embed"), with_kwargs=True),
               service.cross_encoder.model.register_forward_pre_hook(counter("cross"), with_kwargs=True)]
    yield counts
    for h in handles:
        h.remove()


def heatmap_values(heat: str) -> np.ndarray:
    cells = [float(v) for v in re.findall(r"<td style='[^']*' title='(-?[0-9.]+)'>", heat)]
    n = int(round(len(cells) ** 0.5))
    assert n * n == len(cells) and n > 0
    return np.array(cells).reshape(n, n)


def test_one_click_embeds_source_and_candidates_once(click, service, texts_run):
    summary, table, bars, heat = click(SOURCE, "\n".join(CANDIDATES), None, False, False)
    assert texts_run == {"embed": 1 + len(CANDIDATES), "cross": 0}  # was 2 × (1 + 5): ranking, then heatmap
    assert len(table) == len(CANDIDATES) and "按余弦排序 sorted by cosine" in summary
    # The heatmap shows the same cosines as an independent pairwise computation (4 decimals in the titles).
    reference = np.array(service.pairwise([SOURCE, *CANDIDATES]).matrix)
    assert np.abs(heatmap_values(heat) - reference).max() <= 5.1e-5
    assert np.array(table["余弦 cosine"]).tolist() == sorted(table["余弦 cosine"], reverse=True)


def test_a_reranked_click_runs_each_model_once(click, texts_run):
    summary, table, bars, heat = click(SOURCE, "\n".join(CANDIDATES), None, True, False)
    assert texts_run == {"embed": 1 + len(CANDIDATES), "cross": len(CANDIDATES)}
    assert "按交叉编码器排序 sorted by cross-encoder" in summary and "<table>" in heat
    probs = list(table["交叉编码器 P(similar)"])
    assert probs == sorted(probs, reverse=True)


def test_past_the_heatmap_limit_a_note_and_still_one_pass(click, texts_run):
    many = [f"候选文本{i}" for i in range(similarity.HEATMAP_MAX_TEXTS)]  # with the source: one over the limit
    summary, table, bars, heat = click(SOURCE, "\n".join(many), None, False, False)
    assert texts_run["embed"] == 1 + len(many) and len(table) == len(many)
    assert f"this call has {len(many) + 1}" in heat and "<table>" not in heat


def test_similarity_vectors_give_the_pairwise_matrix(service):
    out = service.similarity(SOURCE, CANDIDATES)
    assert (out.model, out.dimension) == ("demo:gte", service.describe().dimension)
    assert out.vectors.shape == (1 + len(CANDIDATES), out.dimension)
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-6)
    pair = service.pairwise(out.texts)
    assert np.abs(np.array(out.pairwise_matrix()) - np.array(pair.matrix)).max() < 1e-6
    for hit in out.results:  # and the ranking's cosines are entries of that matrix
        assert hit.cosine == pytest.approx(pair.matrix[0][1 + hit.index], abs=1e-6)


def test_typed_results_name_the_loaded_models(service):
    caps = service.describe()
    assert caps.roles == ("embed", "cross") and caps.model("embed").name == "demo:gte"
    assert caps.model("cross").name == "demo:structbert" and caps.dimension == 32
    e = service.embed(["北京", "上海"])
    assert (e.model, e.dimension, e.vectors.shape) == ("demo:gte", 32, (2, 32))
    reranked = service.similarity(SOURCE, CANDIDATES[:2], rerank=True)
    assert (reranked.model, reranked.cross_model) == ("demo:gte", "demo:structbert")
