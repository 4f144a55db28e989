"""The measurement tools' pure pieces: workload, statistics, FLOP counts, Prometheus parsing, stage rules."""

from __future__ import annotations

import math

import pytest

from app.errors import InputError
from bench import flops, prometheus, stats
from bench import workload as wl
from bench.loadtest import Outcome, classify, parse_mix, ramp_users, safe_concurrency, summarize

# ---- workload ---------------------------------------------------------------------------------------------


def test_workload_is_deterministic_and_follows_the_stated_bands():
    a, bands_a = wl.make_texts(2000, seed=7)
    b, bands_b = wl.make_texts(2000, seed=7)
    c, _ = wl.make_texts(50, seed=8)
    assert a == b and bands_a == bands_b and a[:50] != c
    by_name = {band.name: band for band in wl.BANDS}
    for text, name in zip(a, bands_a, strict=True):
        band = by_name[name]
        assert band.min_chars <= len(text) <= band.max_chars
    shares = {name: bands_a.count(name) / len(a) for name in by_name}
    for name, band in by_name.items():
        assert shares[name] == pytest.approx(band.weight, abs=0.04)
    assert max(len(t) for t in a) <= 510  # + [CLS], [SEP] = the 512-token maximum
    assert "40% query 4–24 chars" in wl.describe()


def test_fixed_length_workload_is_exactly_n_tokens(tiny_dirs):
    from app.models.checkpoint import load_tokenizer
    from app.models.encoding import encode_pairs, encode_texts

    tok = load_tokenizer(tiny_dirs["embed"])
    texts, names = wl.make_texts(30, seed=2, bands=wl.fixed_bands(128))
    assert set(names) == {"fixed-128"} and len(set(texts)) == 30
    assert encode_texts(tok, texts, 512).lengths == [128] * 30
    first, second = wl.make_pairs(30, seed=2, fixed_tokens=128)
    assert encode_pairs(tok, first, second, 512).lengths == [128] * 30
    with pytest.raises(ValueError, match="at least 3 tokens"):
        wl.fixed_bands(2)


def test_workload_uses_only_single_token_characters(tiny_dirs):
    from app.models.checkpoint import load_tokenizer

    tok = load_tokenizer(tiny_dirs["embed"])
    texts, _ = wl.make_texts(40, seed=1)
    ids = tok(texts, add_special_tokens=True)["input_ids"]
    assert [len(x) for x in ids] == [len(t) + 2 for t in texts]
    assert tok.unk_token_id not in {i for row in ids for i in row}


def test_pairs_and_spread_subset():
    first, second = wl.make_pairs(300, seed=3)
    assert len(first) == len(second) == 300 and all(4 <= len(q) <= 24 for q in first)
    assert all(16 <= len(p) <= 510 for p in second)
    lengths = [len(t) for t in wl.make_texts(200, seed=2)[0]]
    sub = wl.spread_subset(lengths, 10)
    assert len(sub) == 10 and sub == sorted(sub) and len(set(sub)) == 10
    picked = sorted(lengths[i] for i in sub)
    ranked = sorted(lengths)
    assert picked[0] <= ranked[20] and picked[-1] >= ranked[-21]  # spread over the whole range
    assert wl.spread_subset(lengths[:5], 10) == [0, 1, 2, 3, 4]


def test_nlu_items_cover_every_family():
    items = wl.nlu_items(2)
    fams = {i["family"] for i in items}
    assert {"ner", "relation", "event", "classification"} <= fams
    assert all(sum(1 for i in items if i["family"] == f) == 2 for f in fams)
    assert all(i["task"] in ("extract", "classify", "multi_classify") and i["schema"] for i in items)


# ---- statistics -------------------------------------------------------------------------------------------


def test_percentile_matches_numpy():
    import numpy as np

    xs = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    for q in (0, 25, 50, 95, 99, 100):
        assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert stats.percentile([], 50) is None and stats.summarize([])["p50"] is None
    assert stats.slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert stats.slope([1, 1], [2, 3]) is None and stats.ratio(1, 0) is None


# ---- FLOPs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 17, 64])
def test_bert_flops_match_torch_flop_counter(length):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
           "vocab_size": 100, "model_type": "bert"}
    model_cfg = BertConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    model_cfg._attn_implementation = "eager"  # the counter does not see the CPU SDPA kernel's matmuls
    model = BertModel(model_cfg, add_pooling_layer=False).eval()
    ids = torch.randint(5, 100, (3, length))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert flops.useful_flops(cfg, [length] * 3) == counter.get_total_flops()
    assert flops.executed_flops(cfg, [(3, length)]) == counter.get_total_flops()


def test_padding_costs_show_in_executed_flops():
    cfg = {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096, "model_type": "bert"}
    useful = flops.useful_flops(cfg, [10, 500])
    executed = flops.executed_flops(cfg, [(2, 500)])
    assert executed == 2 * flops.forward_flops(cfg, 500) and useful < executed
    # BERT-large at 512 tokens: ≈ 335 GFLOP (24 × (8·512·H² + 4·512·H·I + 4·512²·H)).
    assert flops.forward_flops(cfg, 512) == 24 * (8 * 512 * 1024**2 + 4 * 512 * 1024 * 4096 + 4 * 512**2 * 1024)
    deberta = {**cfg, "model_type": "deberta-v2", "relative_attention": True, "position_buckets": 256,
               "pos_att_type": ["c2p", "p2c"]}
    extra = flops.layer_flops(deberta, 100) - flops.layer_flops(cfg, 100)
    assert extra == 2 * 2 * 100 * 512 * 1024 + 2 * 2 * 512 * 1024 * 1024


# ---- Prometheus -------------------------------------------------------------------------------------------

METRICS = """# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.097152e+08
wenmo_gpu_memory_used_bytes{kind="process",device="0"} 1073741824
wenmo_http_requests_total{route="/v1/embeddings",status="200"} 12
wenmo_model_memory_ratio 0.5
process_virtual_memory_bytes 4.2e+09
wenmo_cuda_allocated_bytes NaN
"""


def test_memory_gauges_are_parsed_and_others_ignored():
    g = prometheus.memory_gauges(METRICS)
    # Labels in name order whatever the server's; the address space and NaN samples are not memory readings.
    assert g == {"process_resident_memory_bytes": 209715200.0,
                 'wenmo_gpu_memory_used_bytes{device="0",kind="process"}': 1073741824.0,
                 "wenmo_model_memory_ratio": 0.5}
    assert prometheus.memory_gauges("") == {} and prometheus.memory_gauges("up 1\n") == {}


def test_resident_memory_is_judged_once_when_the_server_gives_it_twice():
    body = "process_resident_memory_bytes 2e+08\nwenmo_process_resident_memory_bytes 2.1e+08\n"
    assert prometheus.memory_gauges(body) == {"wenmo_process_resident_memory_bytes": 2.1e8}


def test_samples_keep_every_series_with_escaped_label_values():
    body = ('# TYPE wenmo_busy_total counter\nwenmo_busy_total{surface="ui"} 3\n'
            'x_bucket{le="+Inf",path="a\\"b\\\\c"} 2\n')
    assert prometheus.parse_samples(body) == {'wenmo_busy_total{surface="ui"}': 3.0,
                                              'x_bucket{le="+Inf",path="a\\"b\\\\c"}': 2.0}


def test_a_body_that_is_not_the_text_format_is_refused_with_a_message():
    with pytest.raises(ValueError, match="not the Prometheus text format"):
        prometheus.memory_gauges("garbage line without value\n")


def test_memory_trend_describes_each_gauge():
    mib = 1 << 20
    leak = [(t, {"process_resident_memory_bytes": (500 + 2 * t) * mib, "wenmo_model_memory_ratio": 0.5}, 10 * t)
            for t in range(0, 60, 5)]
    t = prometheus.memory_trend(leak)["process_resident_memory_bytes"]
    assert t["slope_per_min"] == pytest.approx(120) and t["first"] == 500 and t["unit"] == "MiB"
    assert t["last"] == 610 and t["max"] == 610 and t["samples"] == 12
    assert prometheus.memory_trend(leak)["wenmo_model_memory_ratio"]["unit"] == "value"
    assert prometheus.memory_trend([]) == {}


def _soak(per_request_mib, warm_jump_mib=0.0, n=20, step=1000, every_s=10.0):
    """Samples every `every_s` s, `step` requests apart; RSS 400 MiB + a jump during the first 3 samples (warm-up)
    + `per_request_mib` per request."""
    mib = 1 << 20
    rows = []
    for i in range(n):
        value = 400 + (warm_jump_mib if i >= 3 else warm_jump_mib * i / 3) + per_request_mib * step * i
        rows.append((i * every_s, {"process_resident_memory_bytes": value * mib, "wenmo_gpu_up": 1.0}, step * i))
    return rows


def test_memory_verdict_is_the_slope_per_request_after_warm_up_extrapolated_to_a_day():
    # 2 KiB per request at 100 req/s: 1.953 MiB per 1k requests; 8.64 M requests a day.
    v = prometheus.memory_verdict(_soak(2 / 1024, warm_jump_mib=80), warmup_s=30, rate_rps=100.0,
                                  budget_mib_per_day=100)
    g = v["gauges"]["process_resident_memory_bytes"]
    assert g["mib_per_1k_requests"] == pytest.approx(2000 / 1024)  # the warm-up's 80 MiB jump is left out
    assert g["mib_per_24h"] == pytest.approx(2 / 1024 * 100 * 86400)
    assert g["points"] == 17 and g["requests_fitted"] == 16000 and g["pass"] is False and v["pass"] is False
    assert g["fit"]["intercept_mib"] == pytest.approx(480)
    assert "wenmo_gpu_up" not in v["gauges"]  # only byte gauges are judged
    assert "100 MiB" in v["rule"] and v["warmup_s"] == 30 and v["rate_rps"] == 100.0


def test_memory_verdict_passes_a_flat_server_and_a_slow_enough_one():
    flat = prometheus.memory_verdict(_soak(0.0, warm_jump_mib=80), 30, 100.0, 100)
    assert flat["pass"] is True and flat["gauges"]["process_resident_memory_bytes"]["mib_per_24h"] == pytest.approx(0)
    # 10 bytes per request at 100 req/s: 82.4 MiB a day, under 100; 13 bytes: 107 MiB, over.
    assert prometheus.memory_verdict(_soak(10 / 2**20), 30, 100.0, 100)["pass"] is True
    assert prometheus.memory_verdict(_soak(13 / 2**20), 30, 100.0, 100)["pass"] is False
    # The same slope at a tenth of the rate is a tenth of the daily figure.
    slow = prometheus.memory_verdict(_soak(13 / 2**20), 30, 10.0, 100)
    assert slow["pass"] is True and slow["gauges"]["process_resident_memory_bytes"]["mib_per_24h"] == pytest.approx(
        13 / 2**20 * 10 * 86400)


def _scatter(rows, amplitude_mib, seed=1):
    """The rows with resident memory scattered by up to ±amplitude_mib (fixed seed)."""
    import random

    rng = random.Random(seed)
    return [(t, {**g, "process_resident_memory_bytes": g["process_resident_memory_bytes"]
                 + rng.uniform(-amplitude_mib, amplitude_mib) * 2**20}, n) for t, g, n in rows]


def test_slope_interval_matches_an_independent_least_squares_fit():
    import random

    import numpy as np

    from bench.stats import slope_interval, t95

    rng = random.Random(7)
    xs = [float(i * 1000) for i in range(15)]
    ys = [600 + 0.002 * x + rng.gauss(0, 5) for x in xs]
    X = np.column_stack([np.asarray(xs), np.ones(len(xs))])
    coef, res, *_ = np.linalg.lstsq(X, np.asarray(ys), rcond=None)
    se = float(np.sqrt(res[0] / (len(xs) - 2) * np.linalg.inv(X.T @ X)[0, 0]))
    lo, hi = slope_interval(xs, ys)
    assert (lo + hi) / 2 == pytest.approx(coef[0]) and (hi - lo) / 2 == pytest.approx(t95(13) * se)
    assert t95(13) == 2.179 and t95(1) == 12.71 and t95(500) == 1.96  # 13 lies between rows: the wider 12's
    assert slope_interval([1.0, 2.0], [1.0, 2.0]) is None  # two points: no scatter to judge
    assert slope_interval([0.0, 1.0, 2.0], [5.0, 6.0, 7.0]) == (1.0, 1.0)  # on a line: no doubt


def test_memory_verdict_calls_a_noisy_short_soak_inconclusive_and_a_clear_leak_a_fail():
    # Flat memory scattered by ±20 MiB over 19k requests: the slope's interval is far wider than the 100 MiB a
    # day allows at 100 req/s (8.64 M requests), so neither PASS nor FAIL can be claimed.
    noisy = prometheus.memory_verdict(_scatter(_soak(0.0), 20), 30, 100.0, 100)
    g = noisy["gauges"]["process_resident_memory_bytes"]
    lo, hi = g["mib_per_24h_ci95"]
    assert lo < 100 < hi and g["verdict"] == "INCONCLUSIVE" and g["pass"] is False
    assert noisy["verdict"] == "INCONCLUSIVE" and noisy["pass"] is False
    # 2 KiB a request under the same scatter: the whole interval is over the budget.
    leak = prometheus.memory_verdict(_scatter(_soak(2 / 1024), 20), 30, 100.0, 100)
    assert leak["gauges"]["process_resident_memory_bytes"]["verdict"] == "FAIL" and leak["verdict"] == "FAIL"
    # The same scatter at a thousandth of the rate: the interval shrinks under the budget.
    slow = prometheus.memory_verdict(_scatter(_soak(0.0), 20), 30, 0.1, 100)
    assert slow["gauges"]["process_resident_memory_bytes"]["mib_per_24h_ci95"][1] < 100 and slow["verdict"] == "PASS"


def test_window_rate_is_the_fitted_windows_requests_over_its_loaded_seconds():
    from bench.loadtest import window_rate

    rows = [(t, {}, n) for t, n in [(10, 100), (40, 400), (70, 1000), (100, 1600)]]
    # After a 30 s warm-up: 1,200 requests from t=40 to t=100, less 5 s paused inside (and 3 s outside).
    assert window_rate(rows, 30, [(20, 23), (50, 53), (98, 102)]) == pytest.approx(1200 / (60 - 3 - 2))
    assert window_rate(rows, 30, []) == pytest.approx(20.0)
    assert window_rate(rows, 80, []) is None  # one sample after the warm-up
    assert window_rate([(0, {}, 5), (10, {}, 5)], 0, []) is None  # no requests between them


def test_the_report_shows_judged_and_unjudged_gauges_side_by_side():
    from bench.report import soak_memory_lines

    rows = _soak(0.0)
    rows = [(t, {**g, "wenmo_gpu_memory_used_bytes": 1.0} if t < 20 else g, n) for t, g, n in rows]  # 2 GPU samples
    verdict = prometheus.memory_verdict(rows, 30, 100.0, 100, series="settled")
    soak = {"memory": prometheus.memory_trend(rows), "verdict": verdict, "settled_samples": rows, "paused_s": 12.0}
    text = "\n".join(soak_memory_lines(soak))
    assert "n/a: fewer than 3 samples" in text  # the GPU gauge: too few samples after the warm-up
    assert "PASS" in text and "20 settled samples" in text and "settled samples) after a 30 s warm-up" in text


def test_the_breakdown_gauges_are_fitted_and_shown_but_not_judged():
    from bench.report import soak_memory_lines

    body = METRICS + ('wenmo_heap_bytes{part="in_use"} 3e+08\nwenmo_python_allocated_blocks 250000\n'
                      'wenmo_resident_bytes{kind="anon"} 4e+08\nwenmo_resident_bytes{kind="file"} 1e+08\n'
                      'wenmo_threads 41\n')
    breakdown = {'wenmo_heap_bytes{part="in_use"}', "wenmo_python_allocated_blocks", "wenmo_threads",
                 'wenmo_resident_bytes{kind="anon"}', 'wenmo_resident_bytes{kind="file"}'}
    assert breakdown <= set(prometheus.memory_gauges(body)) and all(prometheus.is_breakdown(k) for k in breakdown)
    mib = 1 << 20
    # Resident memory flat; the heap's free chunks growing 1 MiB per 1k requests (taken from elsewhere in the
    # resident set), Python's blocks 50 per 1k.
    rows = [(t, {"process_resident_memory_bytes": 500 * mib, 'wenmo_heap_bytes{part="free"}': (20 + t / 10) * mib,
                 "wenmo_python_allocated_blocks": 1000 + 5 * t,
                 'wenmo_resident_bytes{kind="file"}': (90 + t / 20) * mib}, 100 * t) for t in range(0, 200, 10)]
    v = prometheus.memory_verdict(rows, 30, 100.0, 100)
    assert v["pass"] is True and v["verdict"] == "PASS"  # resident memory is what costs
    free, blocks = v["gauges"]['wenmo_heap_bytes{part="free"}'], v["gauges"]["wenmo_python_allocated_blocks"]
    assert free["verdict"] == blocks["verdict"] == "breakdown" and free["pass"] is None
    assert free["mib_per_1k_requests"] == pytest.approx(1.0) and blocks["mib_per_1k_requests"] == pytest.approx(50)
    assert blocks["unit"] == "value" and "unit" not in free
    file = v["gauges"]['wenmo_resident_bytes{kind="file"}']  # a kind of resident memory: shown, not judged
    assert file["verdict"] == "breakdown" and file["mib_per_1k_requests"] == pytest.approx(0.5)
    text = "\n".join(soak_memory_lines({"memory": prometheus.memory_trend(rows), "verdict": v}))
    assert "where it is" in text and "breakdown" in text and "soak memory: PASS" in text


def test_the_cards_memory_is_judged_only_where_the_server_gives_no_share_of_its_own():
    """Three soaks on one H200 (2026-11-28): the CPU servers' verdicts carried the CUDA server's GPU steps, since
    NVML's used memory counts every process. With the server's own share in the samples, that is judged and the
    card's figure is breakdown; without it (a container NVML cannot attribute), the card's is judged as before."""
    mib = 1 << 20

    def rows(own: bool) -> list:
        return [(t, {"wenmo_process_resident_memory_bytes": 500 * mib,
                     'wenmo_gpu_memory_used_bytes{gpu="0"}': (1000 + t) * mib,  # another process grows
                     **({"wenmo_gpu_process_memory_bytes": 0.0} if own else {})}, 100 * t) for t in range(0, 200, 10)]
    with_share = prometheus.memory_verdict(rows(True), 30, 100.0, 100)
    card = with_share["gauges"]['wenmo_gpu_memory_used_bytes{gpu="0"}']
    assert card["verdict"] == "breakdown" and card["mib_per_1k_requests"] == pytest.approx(10.0)
    assert with_share["gauges"]["wenmo_gpu_process_memory_bytes"]["verdict"] == "PASS"
    assert with_share["verdict"] == "PASS"
    without = prometheus.memory_verdict(rows(False), 30, 100.0, 100)
    assert without["gauges"]['wenmo_gpu_memory_used_bytes{gpu="0"}']["verdict"] == "FAIL"
    assert without["verdict"] == "FAIL"
    body = 'wenmo_gpu_process_memory_bytes 7.0e+08\nwenmo_gpu_memory_used_bytes{gpu="0"} 1.8e+09\n'
    assert set(prometheus.memory_gauges(body)) == {"wenmo_gpu_process_memory_bytes",
                                                   'wenmo_gpu_memory_used_bytes{gpu="0"}'}


def test_the_later_half_tells_a_few_early_steps_from_a_steady_leak():
    """Shown beside the verdict, never instead of it: a server that took bounded steps in the first half of the
    window does not pass on its whole-window slope and reads flat over the later half; a steady leak keeps its
    slope."""
    from bench.report import soak_memory_lines

    mib = 1 << 20
    steps = [(t, {"process_resident_memory_bytes": (500 + 3 * min(t // 10, 9)) * mib}, 1000 * t)
             for t in range(0, 200, 5)]  # +3 MiB every 10 s to 90 s, flat from there
    v = prometheus.memory_verdict(steps, 0, 100.0, 100)
    g = v["gauges"]["process_resident_memory_bytes"]
    assert v["verdict"] == g["verdict"] != "PASS" and g["mib_per_1k_requests"] > 0.01
    late = g["second_half"]
    assert late["points"] == 20 and late["mib_per_1k_requests"] == 0 and late["verdict"] == "PASS"
    assert late["requests_fitted"] == 1000 * (195 - 100)
    leak = prometheus.memory_verdict(_soak(2 / 1024, n=40), 0, 100.0, 100)["gauges"]["process_resident_memory_bytes"]
    assert leak["second_half"]["mib_per_1k_requests"] == pytest.approx(leak["mib_per_1k_requests"])
    assert leak["second_half"]["verdict"] == "FAIL"
    text = "\n".join(soak_memory_lines({"memory": prometheus.memory_trend(steps), "verdict": v}))
    assert "the later half of the fitted samples (not the verdict" in text and "soak memory: PASS" not in text
    few = prometheus.memory_verdict(_soak(0.0, n=8), 30, 100.0, 100)["gauges"]["process_resident_memory_bytes"]
    assert "second_half" not in few  # 5 samples after the warm-up: too few for two halves of 3


def test_memory_verdict_without_enough_samples_is_not_a_pass():
    v = prometheus.memory_verdict(_soak(0.0, n=4), warmup_s=30, rate_rps=100.0, budget_mib_per_day=100)
    g = v["gauges"]["process_resident_memory_bytes"]
    assert g["pass"] is None and "fewer than 3" in g["why"] and v["pass"] is None
    assert prometheus.memory_verdict([], 30, 100.0, 100)["pass"] is None


# ---- stage rules ------------------------------------------------------------------------------------------


def step(users, p95, errors=0, busy=0, ok=10):
    return {"users": users, "latency_p95_ms": p95, "errors": errors, "busy": busy, "ok": ok}


def test_safe_concurrency_is_the_last_of_the_leading_passing_steps():
    assert safe_concurrency([step(1, 50), step(2, 90), step(4, 200)], 100) == 2
    assert safe_concurrency([step(4, 50), step(1, 50), step(2, 50)], 100) == 4
    assert safe_concurrency([step(1, 50), step(2, 90, errors=1), step(4, 60)], 100) == 1
    assert safe_concurrency([step(1, 50), step(2, 90, busy=3), step(4, 60)], 100) == 1
    assert safe_concurrency([step(1, 150), step(2, 90)], 100) is None
    assert safe_concurrency([step(1, None, ok=0)], 100) is None
    assert safe_concurrency([], 100) is None


def test_outcome_summary_counts_busy_apart_from_errors():
    outs = [Outcome("vectors", classify(s), s, ms / 1000, 0.0, detail="" if s in (200, 429, 503) else f"HTTP {s}")
            for s, ms in [(200, 10), (200, 20), (200, 30), (503, 1), (429, 1), (500, 5), (None, 9)]]
    outs[-1].detail = "timeout"
    s = summarize(outs, users=3, elapsed_s=2.0)
    assert (s["requests"], s["ok"], s["busy"], s["errors"]) == (7, 3, 2, 2)
    assert s["latency_p50_ms"] == pytest.approx(20) and s["throughput_rps"] == pytest.approx(1.5)
    assert s["error_reasons"] == {"HTTP 500": 1, "timeout": 1} and s["busy_statuses"] == {"503": 1, "429": 1}
    assert classify(204) == "ok" and classify(401) == "error" and classify(None) == "error"


def test_mix_and_ramp_parsing():
    assert parse_mix("vectors=6,similarity=3,nlu=1") == pytest.approx({"vectors": .6, "similarity": .3, "nlu": .1})
    assert parse_mix("vectors=1,nlu=0") == {"vectors": 1.0}
    for bad in ("vectors=x", "bogus=1", "vectors=0", "vectors=-1"):
        with pytest.raises(InputError):
            parse_mix(bad)
    assert ramp_users(8) == [1, 2, 4, 8] and ramp_users(6) == [1, 2, 4, 6] and ramp_users(1) == [1]
    assert ramp_users(8, (4, 1, 4)) == [1, 4]


@pytest.mark.parametrize(("choice", "names"), [
    ("both", ["wenmo-torch", "wenmo-deepspeed", "wenmo-deepspeed-inject"]),
    ("off", ["wenmo-torch", "wenmo-deepspeed"]),
    ("on", ["wenmo-torch", "wenmo-deepspeed-inject"]),
])
def test_kernel_inject_choice_picks_the_cuda_deepspeed_configurations(choice, names):
    from app.config import Settings
    from bench.suite import wenmo_specs

    specs, notes = wenmo_specs(Settings(engine="auto"), on_cuda=True, deepspeed_ok=True, kernel_inject=choice)
    assert [s.name for s in specs] == names
    assert [s.kernel_inject for s in specs if s.engine == "deepspeed"] == [n.endswith("inject") for n in names[1:]]
    assert any("--kernel-inject" in n for n in notes) == (choice != "both")
    cpu, _ = wenmo_specs(Settings(engine="auto", dtype="fp32"), on_cuda=False, deepspeed_ok=True, kernel_inject=choice)
    assert [s.name for s in cpu] == ["wenmo-torch", "wenmo-deepspeed"]  # no injection on a CPU, whatever the choice


def test_theil_sen_is_the_median_of_pairwise_slopes_and_its_interval_covers_95_percent():
    import random

    import numpy as np

    from bench.stats import theil_sen

    rng = random.Random(11)
    xs = [float(i * 1000) for i in range(30)]
    ys = [600 + 0.002 * x + rng.gauss(0, 5) for x in xs]
    x, y = np.asarray(xs), np.asarray(ys)
    i, j = np.triu_indices(len(xs), k=1)
    b, a, lo, hi = theil_sen(xs, ys)
    assert b == pytest.approx(float(np.median((y[j] - y[i]) / (x[j] - x[i]))))
    assert a == pytest.approx(float(np.median(y - b * x))) and lo < b < hi
    covered = 0
    for _ in range(400):  # Sen's interval on fresh noise holds the true slope ~95 % of the time
        ys = [600 + 0.002 * x + rng.gauss(0, 5) for x in xs]
        _, _, lo, hi = theil_sen(xs, ys)
        covered += lo <= 0.002 <= hi
    assert 0.91 <= covered / 400 <= 0.99
    assert theil_sen([0.0, 1.0], [0.0, 1.0]) is None and theil_sen([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) is None
    assert theil_sen([0.0, 1.0, 2.0], [5.0, 6.0, 7.0])[2:] == (-math.inf, math.inf)  # three points bound nothing


def test_one_sample_caught_mid_trim_does_not_move_the_verdict():
    # A flat server, sampled 60 times, ±2 MiB; one settled sample 80 MiB high (the heap in the middle of a trim).
    rows = _scatter(_soak(0.0, n=60), 2)
    t, g, n = rows[45]
    rows[45] = (t, {**g, "process_resident_memory_bytes": g["process_resident_memory_bytes"] + 80 * 2**20}, n)
    v = prometheus.memory_verdict(rows, 30, 10.0, 100)
    g = v["gauges"]["process_resident_memory_bytes"]
    assert v["verdict"] == "PASS" and abs(g["mib_per_1k_requests"]) < 0.02
    # Least squares, carried beside it, is pulled by that one sample, and its interval would not have decided.
    assert abs(g["least_squares"]["mib_per_1k_requests"]) > 5 * abs(g["mib_per_1k_requests"])
    lo, hi = g["least_squares"]["mib_per_24h_ci95"]
    assert lo < 100 < hi


def test_a_long_series_is_thinned_for_the_fit_and_still_finds_the_slope():
    rows = _soak(2 / 1024, n=3000, every_s=5.0)  # ~4 hours of samples every 5 s
    g = prometheus.memory_verdict(rows, 30, 100.0, 100)["gauges"]["process_resident_memory_bytes"]
    assert g["points"] > prometheus.MAX_FIT_POINTS and g["mib_per_1k_requests"] == pytest.approx(2000 / 1024)


def test_a_row_named_inject_fails_when_the_plan_turns_injection_off(tiny_dirs):
    # The plan turns injection off where it cannot run (the CPU here; transformers 5 on a GPU): timing the plain
    # DeepSpeed wrap under the "wenmo-deepspeed-inject" name would publish a verdict nobody measured.
    from app.config import Settings
    from bench.worker import _load

    job = {"kind": "wenmo", "family": "embed", "model_dir": str(tiny_dirs["embed"]), "device": "cpu",
           "dtype": "fp32", "engine": "deepspeed", "ds_config": Settings().ds_config, "kernel_inject": True,
           "max_length": 512, "max_batch_tokens": 16384, "max_batch_size": 128}
    with pytest.raises(RuntimeError, match="plan turned it off: kernel injection and CUDA graphs need CUDA"):
        _load(job, [])
