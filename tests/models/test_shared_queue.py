"""Every model family through the engine's shared queue (app/composition.make_queue, batch_across_requests=on):
concurrent requests share forwards and each gets exactly what it gets alone. The "alone" side is the same model
with its own private queue (each call's forwards in its own thread), so the only difference is who shares a
forward with whom — the padding a text sees, nothing else."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.composition import make_queue
from app.config import Settings
from app.errors import InputError
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter
from app.models.family import own_queue
from app.models.uninlu.adapter import NluAdapter
from app.models.uninlu.fixture import build_rex_uninlu

TEXTS = ["北京", "我喜欢这部电影，音乐很好", "上海的天气", "今天天气很好，我们去公园散步，然后吃饭", "abc 123",
         "电影", "一个很长很长的句子，里面有很多很多的字，用来让它和别的句子长度不同", "好"]


def shared(model, role, plan, **settings):
    model.queue = make_queue(role, model, Settings(**settings), plan)
    return model


def together(calls):
    """Run the calls at once, released by one barrier so they really overlap; results in call order."""
    barrier = threading.Barrier(len(calls))

    def go(call):
        barrier.wait(10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(60) for f in [pool.submit(go, c) for c in calls]]


@pytest.fixture(scope="module")
def embedders(tiny_dirs, cpu_plan):
    alone = EmbeddingAdapter(tiny_dirs["embed"], cpu_plan)
    both = shared(EmbeddingAdapter(tiny_dirs["embed"], cpu_plan), "embed", cpu_plan)
    return alone, both


def test_concurrent_single_texts_share_forwards_and_match_their_vectors_alone(embedders):
    alone, both = embedders
    before = both.queue.stats.forwards
    got = together([lambda t=t: both.embed([t]) for t in TEXTS * 4])
    ref = alone.embed(TEXTS, max_batch_size=1)
    for k, r in enumerate(got):
        v = r.vectors[0]
        assert float(v @ ref.vectors[k % len(TEXTS)]) >= 0.99999
        assert r.token_counts == [ref.token_counts[k % len(TEXTS)]]
    assert both.queue.stats.forwards - before < len(TEXTS) * 4  # some forwards were shared
    assert both.queue.stats.shared_forwards >= 1


def test_normalize_is_each_requests_own_choice_in_a_shared_forward(embedders):
    alone, both = embedders
    raw, unit = together([lambda: both.embed(TEXTS, normalize=False), lambda: both.embed(TEXTS, normalize=True)])
    assert np.allclose(np.linalg.norm(unit.vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw.vectors, axis=1), 1.0, atol=1e-3)
    assert np.allclose(raw.vectors / np.linalg.norm(raw.vectors, axis=1, keepdims=True), unit.vectors, atol=1e-5)


def test_cross_encoder_pairs_from_concurrent_requests(tiny_dirs, cpu_plan):
    alone = CrossEncoderAdapter(tiny_dirs["cross"], cpu_plan)
    both = shared(CrossEncoderAdapter(tiny_dirs["cross"], cpu_plan), "cross", cpu_plan)
    got = together([lambda t=t: both.score([TEXTS[1]], [t]) for t in TEXTS])
    ref = alone.score([TEXTS[1]] * len(TEXTS), TEXTS, max_batch_size=1)
    assert [r.scores[0] for r in got] == pytest.approx(ref.scores, abs=1e-5)


def test_nlu_requests_share_window_forwards_and_give_their_outputs_alone(tmp_path_factory, cpu_plan):
    rex = build_rex_uninlu(tmp_path_factory.mktemp("rex-shared") / "rex-uninlu")
    alone = NluAdapter(rex, cpu_plan)
    both = shared(NluAdapter(rex, cpu_plan), "nlu", cpu_plan)
    assert both.queue.limits.max_batch_size == 32  # the family's own cap under max_batch_size 128
    schema = {"人物": None, "地理位置": None, "组织机构": {"创始人(人物)": None}}
    texts = ["1987年首播的央视版《红楼梦》是中央电视台摄制的一部古装连续剧", "马云在杭州创办了阿里巴巴",
             "北京是中国的首都", "张三和李四去了上海"]
    expected = [alone.infer(t, schema) for t in texts]
    got = together([lambda t=t: both.infer(t, schema) for t in texts * 2])
    assert got == expected * 2
    intents = {"查询天气": None, "订机票": None, "播放音乐": None}
    cls = together([lambda: both.infer("明天北京会下雨吗", intents, "classify")] * 3)
    assert cls == [alone.infer("明天北京会下雨吗", intents, "classify")] * 3


def test_off_keeps_each_request_on_its_own_forwards(tiny_dirs, cpu_plan):
    model = shared(EmbeddingAdapter(tiny_dirs["embed"], cpu_plan), "embed", cpu_plan, batch_across_requests="off")
    assert not model.queue.across
    together([lambda t=t: model.embed([t]) for t in TEXTS])
    assert model.queue.stats.forwards == 0  # the worker never ran: each call planned and ran its own


def test_a_private_queue_uses_the_settings_defaults_and_the_family_cap(tiny_dirs, cpu_plan):
    model = EmbeddingAdapter(tiny_dirs["embed"], cpu_plan)
    assert (model.queue.limits.max_batch_tokens, model.queue.limits.max_batch_size) == (
        Settings().max_batch_tokens, Settings().max_batch_size)
    assert own_queue(model, cpu_plan, max_batch_size=3).limits.max_batch_size == 3


def test_a_calls_own_limits_below_one_are_refused_for_every_family(tiny_dirs, cpu_plan):
    # One check where a call's limits become a queue (app/models/family.queue_for_call): a zero no longer falls
    # back to the default limits unnoticed.
    model = EmbeddingAdapter(tiny_dirs["embed"], cpu_plan)
    for limits in ({"max_batch_tokens": 0}, {"max_batch_size": 0}):
        with pytest.raises(InputError, match="must be ≥ 1"):
            model.embed(TEXTS, **limits)
    assert model.embed(TEXTS[:2], max_batch_size=1).vectors.shape[0] == 2
