"""The service's typed results: each carries the names of the models that made it and the vector size, the
similarity result keeps the vectors its ranking used (so the pairwise matrix needs no second pass), and the
JSON views keep the documented fields in the documented order.

Pure: the adapters are small fakes with the adapters' interface (vectors from a hash of the text, so the
expected numbers are computed here independently of the service); the real tiny models are exercised in
tests/server/test_similarity_tab.py."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import pytest

from app.config import Settings
from app.errors import InputError, ModelUnavailableError
from app.models.encoding import ModelInfo
from app.service import (
    Capabilities,
    Embeddings,
    ModelDescription,
    NluResult,
    PairwiseResult,
    Service,
    SimilarityHit,
    SimilarityResult,
)

DIM = 6


def raw_vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def unit(text: str) -> np.ndarray:
    v = raw_vector(text)
    return v / np.linalg.norm(v)


@dataclass
class EmbedOut:
    vectors: np.ndarray
    truncated: list[bool]
    token_counts: list[int]


@dataclass
class PairOut:
    scores: list[float]
    truncated: list[bool]


class FakeEmbedder:
    def __init__(self, name: str = "fake-gte") -> None:
        self.dimension = DIM
        self.info = ModelInfo("embedding", name, "/models/gte", 8, DIM, "cpu", "fp32", "torch")
        self.calls: list[list[str]] = []

    def embed(self, texts, *, normalize):  # noqa: ANN001
        self.calls.append(list(texts))
        vectors = np.stack([unit(t) if normalize else raw_vector(t) for t in texts])
        return EmbedOut(vectors, [len(t) > 8 for t in texts], [len(t) + 2 for t in texts])


def cross_score(first: str, second: str) -> float:
    return (len(second) % 7) / 10 + (0.05 if first[0] in second else 0.0)


class FakeCrossEncoder:
    def __init__(self) -> None:
        self.info = ModelInfo("cross_encoder", "fake-structbert", "/models/sb", 8, None, "cpu", "fp32", "torch")

    def score(self, first, second):  # noqa: ANN001
        return PairOut([cross_score(a, b) for a, b in zip(first, second, strict=True)],
                       [len(a) + len(b) > 12 for a, b in zip(first, second, strict=True)])


class FakeNlu:
    def __init__(self) -> None:
        self.info = ModelInfo("nlu", "fake-rex", "/models/rex", 512, None, "cpu", "fp32", "torch")

    def infer(self, text, schema, task=None, *, max_forwards, max_paths):  # noqa: ANN001
        kind = next(iter(schema))
        return {"task": task or "extract",
                "output": [[{"type": kind, "span": text[:2], "offset": [0, 2], "score": 0.5}]],
                "truncated": len(text) > 10}


def service(**adapters) -> Service:  # noqa: ANN003
    return Service(Settings(), **adapters)


CANDIDATES = ["今天天气不错", "明天会下雨吗，还是晴天呢", "我喜欢看电影", "今天天气不错"]


def test_embeddings_carry_model_name_dimension_and_values():
    e = service(embedder=FakeEmbedder("gte-x")).embed(["北京", "上海浦东新区的天气预报"], normalize=False)
    assert isinstance(e, Embeddings)
    assert (e.model, e.dimension, e.vectors.shape) == ("gte-x", DIM, (2, DIM))
    assert np.array_equal(e.vectors[1], raw_vector("上海浦东新区的天气预报"))
    assert e.truncated == (False, True) and e.token_counts == (4, 13)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.model = "other"  # type: ignore[misc]


def test_similarity_result_ranks_by_cosine_and_keeps_the_vectors_in_input_order():
    embedder = FakeEmbedder()
    out = service(embedder=embedder).similarity("今天天气很好", CANDIDATES)
    assert isinstance(out, SimilarityResult) and embedder.calls == [["今天天气很好", *CANDIDATES]]
    assert (out.model, out.cross_model, out.dimension, out.reranked) == ("fake-gte", None, DIM, False)
    expected = {i: float(unit("今天天气很好") @ unit(t)) for i, t in enumerate(CANDIDATES)}
    ranked = sorted(expected, key=lambda i: (-expected[i], i))
    assert [h.index for h in out.results] == ranked  # best first; the duplicate keeps input order (0 before 3)
    assert ranked.index(0) < ranked.index(3)
    for hit in out.results:
        assert isinstance(hit, SimilarityHit) and hit.text == CANDIDATES[hit.index]
        assert hit.cosine == pytest.approx(expected[hit.index], abs=1e-6) and hit.cross_score is None
        assert hit.truncated is (len(hit.text) > 8)
    assert out.texts == ["今天天气很好", *CANDIDATES]
    assert np.allclose(out.vectors, np.stack([unit(t) for t in out.texts]), atol=1e-7)
    assert out.source_truncated is False


def test_the_result_vectors_give_the_matrix_pairwise_gives_without_embedding_again():
    embedder = FakeEmbedder()
    svc = service(embedder=embedder)
    out = svc.similarity("今天天气很好", CANDIDATES)
    from_result = np.array(out.pairwise_matrix())
    assert len(embedder.calls) == 1
    pair = svc.pairwise(out.texts)
    assert isinstance(pair, PairwiseResult) and pair.texts == out.texts and pair.model == "fake-gte"
    assert from_result.shape == (5, 5) and np.abs(from_result - np.array(pair.matrix)).max() < 1e-6
    reference = np.array([[float(unit(a) @ unit(b)) for b in out.texts] for a in out.texts])
    assert np.abs(from_result - reference).max() < 1e-6
    assert np.allclose(np.diag(from_result), 1.0, atol=1e-6)


def test_reranked_result_names_both_models_and_sorts_by_the_cross_encoder():
    out = service(embedder=FakeEmbedder(), cross_encoder=FakeCrossEncoder()).similarity(
        "今天", CANDIDATES, rerank=True)
    assert (out.reranked, out.model, out.cross_model) == (True, "fake-gte", "fake-structbert")
    scores = {i: cross_score("今天", t) for i, t in enumerate(CANDIDATES)}
    assert [h.index for h in out.results] == sorted(scores, key=lambda i: (-scores[i], i))
    for hit in out.results:
        assert hit.cross_score == pytest.approx(scores[hit.index])
        # cut by the embedder (over 8 characters) or as a pair with the source (over 12)
        assert hit.truncated is (len(hit.text) > 8 or len(hit.text) + 2 > 12)


def test_similarity_json_view_keeps_the_documented_fields_and_order():
    out = service(embedder=FakeEmbedder()).similarity("今天天气很好", CANDIDATES[:2])
    body = out.as_dict()
    assert list(body) == ["source", "source_truncated", "reranked", "results"]
    assert [list(r) for r in body["results"]] == [["index", "text", "cosine", "cross_score", "truncated"]] * 2
    assert all(type(r["cosine"]) is float and type(r["truncated"]) is bool for r in body["results"])


def test_nlu_result_carries_the_model_and_the_documented_json():
    out = service(nlu=FakeNlu()).nlu("北京天安门广场很热闹", {"地点": None}, "extract")
    assert isinstance(out, NluResult)
    assert (out.task, out.truncated, out.model) == ("extract", False, "fake-rex")
    assert out.output == [[{"type": "地点", "span": "北京", "offset": [0, 2], "score": 0.5}]]
    assert list(out.as_dict()) == ["task", "output", "truncated"] and out.elapsed_s >= 0


def test_models_and_describe_say_what_is_loaded_by_role():
    full = service(embedder=FakeEmbedder(), cross_encoder=FakeCrossEncoder(), nlu=FakeNlu())
    models = full.models()
    assert all(isinstance(m, ModelDescription) for m in models)
    assert [(m.role, m.family, m.name, m.dimension) for m in models] == [
        ("embed", "embedding", "fake-gte", DIM), ("cross", "cross_encoder", "fake-structbert", None),
        ("nlu", "nlu", "fake-rex", None)]
    caps = full.describe()
    assert isinstance(caps, Capabilities) and caps.roles == ("embed", "cross", "nlu")
    assert caps.dimension == DIM and caps.device == "cpu" and caps.model("nlu").path == "/models/rex"

    only_nlu = service(nlu=FakeNlu()).describe()
    assert only_nlu.roles == ("nlu",) and only_nlu.dimension is None and only_nlu.model("embed") is None
    assert service().describe().device is None

    weights = {"fake-gte": 10, "fake-structbert": 20, "fake-rex": 30}
    assert full.weigh_models(lambda m: weights[m.info.name]) == {"embed": 10, "cross": 20, "nlu": 30}


def test_messages_stay_as_they_were():
    svc = service(embedder=FakeEmbedder())
    with pytest.raises(InputError, match=r"^source must be a non-empty text \(源文本为空\)$"):
        svc.similarity("  ", ["a"])
    with pytest.raises(InputError, match=r"^pairwise matrix: 3 texts, at most 2; give fewer texts$"):
        svc.pairwise(["a", "b", "c"], max_texts=2)
    with pytest.raises(ModelUnavailableError, match="the cross-encoder model is not loaded in this process"):
        svc.similarity("a", ["b"], rerank=True)
    with pytest.raises(ModelUnavailableError, match="the NLU model is not loaded in this process"):
        svc.nlu("a", {"x": None})
