"""`wenmo tune` and `wenmo evaluate` end to end, as real child processes on the tiny checkpoints.

The task is tests/tune/synthetic.py's: pairs labelled by a rule the random tiny models cannot know. Before
tuning the held-out figures sit at chance; after a short ZeRO-2 run they are clearly better. Figures seen on the
development machine (2 CPUs): embedder Spearman 0.03 → 0.86 (ROC-AUC 0.52 → 1.00) in 80 steps; cross-encoder
ROC-AUC 0.48 → 0.97 (accuracy 0.48 → 0.93) in 200 steps, the test runs 240. The assertions leave wide margins.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import task_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def run_cli(args, tmp, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "WENMO_STATE_DIR": str(tmp / "state"),
                "WENMO_MODEL_DIR": str(tmp / "cache")})
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, cwd=ROOT, env=env,
                          timeout=timeout, text=True)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return task_files(tmp_path_factory.mktemp("task"), train=256, held_out=128, groups=2)


@pytest.fixture(scope="module")
def tuned_embedder(tiny_dirs, task, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune-embed")
    source_before = digest(tiny_dirs["embed"])
    out = tmp / "out"
    r = run_cli(["tune", "--model", "embed", "--embed-model", str(tiny_dirs["embed"]), "--train", str(task[0]),
                 "--eval", str(task[1]), "--out", str(out), "--events", str(tmp / "events.jsonl"), "--steps", "80",
                 "--batch-size", "16", "--lr", "3e-3"], tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"tmp": tmp, "out": out, "result": json.loads(r.stdout), "stderr": r.stderr,
            "source_before": source_before}


def test_the_embedder_learns_the_rule_with_zero2(tuned_embedder, tiny_dirs):
    result, out = tuned_embedder["result"], tuned_embedder["out"]
    report = json.loads((out / "tune-report.json").read_text())
    assert result["zero_stage"] == 2 and report["zero_stage"] == 2 and report["steps"] == 80
    assert report["model"] == str(tiny_dirs["embed"]) and report["loss"] == "in-batch"  # 0/1 labels: auto
    assert report["optimizer"] == "torch.AdamW" and report["precision"] == "fp32"
    before, after = report["before"], report["after"]
    assert abs(before["spearman"]) < 0.25 and 0.35 < before["roc_auc"] < 0.65  # chance: the rule is unknown
    assert after["spearman"] > before["spearman"] + 0.4 and after["roc_auc"] > 0.85
    assert len(report["losses"]) == 80 and np.mean(report["losses"][-10:]) < np.mean(report["losses"][:10])
    png = out / "tune-report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert result["after"] == after and result["out"] == str(out)


def test_events_trace_the_run_in_order(tuned_embedder):
    events = [json.loads(line) for line in (tuned_embedder["tmp"] / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "eval", *["step"] * 80, "eval", "done"]
    start = events[0]
    assert start["zero_stage"] == 2 and start["steps"] == 80 and start["train_pairs"] == 256
    assert [e["step"] for e in events[2:82]] == list(range(1, 81))
    assert events[1]["phase"] == "before" and events[82]["phase"] == "after"
    assert events[-1]["out"] == str(tuned_embedder["out"])


def test_the_output_is_a_checkpoint_in_the_source_layout_and_the_source_is_untouched(tuned_embedder, tiny_dirs,
                                                                                     cpu_plan):
    import torch
    from transformers import AutoModel

    from app.models.embedding import EmbeddingAdapter

    out, source = tuned_embedder["out"], tiny_dirs["embed"]
    assert digest(source) == tuned_embedder["source_before"]
    names = set(digest(out))
    assert set(digest(source)) <= names and names - set(digest(source)) == {"tune-report.json", "tune-report.png"}
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    tuned_state = torch.load(out / "pytorch_model.bin", weights_only=True)
    source_state = torch.load(source / "pytorch_model.bin", weights_only=True)
    assert tuned_state.keys() == source_state.keys()  # the same key names ("bert." prefix included)
    changed = [k for k in source_state if not torch.equal(tuned_state[k], source_state[k])]
    assert len(changed) > len(source_state) // 2
    # our loader, and plain transformers, agree on the tuned vectors
    ours = EmbeddingAdapter(out, cpu_plan).embed(["北京天安门", "今天天气很好"], normalize=False).vectors
    hf = AutoModel.from_pretrained(str(out)).eval()
    ids = EmbeddingAdapter(out, cpu_plan).tokenizer(["北京天安门", "今天天气很好"], padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = hf(**ids).last_hidden_state[:, 0].numpy()
    assert np.allclose(ours, cls, atol=1e-4)


def test_wenmo_embed_and_evaluate_load_the_output(tuned_embedder, task, tmp_path):
    out = tuned_embedder["out"]
    r = subprocess.run([sys.executable, "-m", "app", "embed", "--model", str(out)], input="北京天安门\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "WENMO_STATE_DIR": str(tmp_path), "WENMO_LOG_LEVEL": "WARNING"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["dimension"] == 32
    r = run_cli(["evaluate", "--model", str(out), "--eval", str(task[1]), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got["role"] == "embed" and got["pairs"] == 128  # the role read from configuration.json's task
    assert got["metrics"]["spearman"] == pytest.approx(tuned_embedder["result"]["after"]["spearman"], abs=1e-6)


def test_the_cross_encoder_learns_the_rule(tiny_dirs, task, tmp_path):
    r = run_cli(["tune", "--model", "cross", "--cross-model", str(tiny_dirs["cross"]), "--train", str(task[0]),
                 "--eval", str(task[1]), "--out", str(tmp_path / "cross"), "--steps", "240", "--batch-size", "16",
                 "--lr", "3e-3"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    before, after = result["before"], result["after"]
    assert result["zero_stage"] == 2 and set(after) == {"accuracy", "f1", "roc_auc"}
    assert 0.3 < before["roc_auc"] < 0.7
    assert after["roc_auc"] > 0.85 and after["accuracy"] > 0.75
    assert (tmp_path / "cross" / "config.json").read_text() == (tiny_dirs["cross"] / "config.json").read_text()


def test_bad_rows_name_the_line_before_any_model_loads(tmp_path, task):
    bad = tmp_path / "bad.csv"
    bad.write_text("text_a,text_b,label\n好,坏,0\n好,坏,5\n", encoding="utf-8")
    r = run_cli(["tune", "--model", "embed", "--demo", "--train", str(bad), "--eval", str(task[1])], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{bad}: 第 3 行 (line 3): label '5' is outside [0, 1]" in r.stderr
    assert not (tmp_path / "state").exists()  # refused before the demo models were even built


def test_an_existing_out_is_refused_and_duplicates_and_overlap_are_reported(tmp_path, task):
    out = tmp_path / "exists"
    out.mkdir()
    r = run_cli(["tune", "--model", "embed", "--demo", "--train", str(task[0]), "--eval", str(task[1]), "--out",
                 str(out)], tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    train = tmp_path / "train.tsv"
    held = tmp_path / "eval.tsv"
    train.write_text("甲\t乙\t1\n丙\t丁\t0\n乙\t甲\t1\n", encoding="utf-8")
    held.write_text("丁\t丙\t0\n戊\t己\t1\n", encoding="utf-8")
    r = run_cli(["tune", "--model", "embed", "--demo", "--train", str(train), "--eval", str(held), "--steps", "1",
                 "--batch-size", "2", "--report", str(tmp_path / "r.json"), "--log-level", "WARNING"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{train}: 1 duplicate pairs (line 3 repeats line 1)" in r.stderr
    assert f"{held}: 1 held-out pairs also occur in {train} (line 1 = {train} line 2)" in r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["train"]["duplicates"] == 1 and report["eval"]["overlap_with_train"] == 1
    assert (tmp_path / "r.png").exists()
    # default out: the demo models' folder, tuned/<role>-<timestamp>
    assert Path(report["out"]).parent == tmp_path / "state" / "demo-models" / "tuned"
    assert Path(report["out"]).name.startswith("embed-") and (Path(report["out"]) / "vocab.txt").exists()
