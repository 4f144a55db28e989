"""The shell CLI end to end, as real child processes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(args, stdin: bytes = b"", env_extra=None, tmp=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENMO_")}
    env.update({"WENMO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
    if tmp is not None:
        env.update({"WENMO_STATE_DIR": str(tmp / "state"), "WENMO_MODEL_DIR": str(tmp / "cache")})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "app", *args], input=stdin, capture_output=True, cwd=ROOT,
                          env=env, timeout=timeout)


TEXTS = ["北京天安门", "我喜欢这部电影", "上海"]


def test_embed_jsonl_matches_service(tiny_dirs, cpu_plan, tmp_path):
    from app.models.embedding import EmbeddingAdapter

    r = run_cli(["embed", "--model", str(tiny_dirs["embed"])], "\n".join(TEXTS).encode(), tmp=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2] and [row["text"] for row in rows] == TEXTS
    assert all(row["dimension"] == 32 and len(row["vector"]) == 32 and row["truncated"] is False for row in rows)
    expected = EmbeddingAdapter(tiny_dirs["embed"], cpu_plan).embed(TEXTS).vectors
    assert np.allclose(np.array([row["vector"] for row in rows]), expected, atol=1e-6)


def test_embed_csv_and_npy_agree(tiny_dirs, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out_csv, out_npy = tmp_path / "v.csv", tmp_path / "v.npy"
    for fmt, out in (("csv", out_csv), ("npy", out_npy)):
        r = run_cli(["embed", "--model", str(tiny_dirs["embed"]), "--input", str(src), "--format", fmt,
                     "--output", str(out), "--no-normalize"], tmp=tmp_path)
        assert r.returncode == 0, r.stderr.decode()
    rows = list(csv.reader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    assert rows[0][:3] == ["index", "text", "truncated"] and len(rows) == 4
    from_csv = np.array([[float(x) for x in row[3:]] for row in rows[1:]], dtype=np.float32)
    from_npy = np.load(out_npy)
    assert from_npy.shape == (3, 32) and from_npy.dtype == np.float32
    assert np.array_equal(from_csv, from_npy)
    assert abs(np.linalg.norm(from_npy[0]) - 1) > 1e-3  # --no-normalize gave raw vectors


def test_similarity_sorted_by_cross_score(tiny_dirs, tmp_path):
    r = run_cli(["similarity", "--embed-model", str(tiny_dirs["embed"]), "--cross-model", str(tiny_dirs["cross"]),
                 "--source", "北京天安门"], "\n".join(TEXTS).encode(), tmp=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["source"] == "北京天安门" and len(out["results"]) == 3
    scores = [x["cross_score"] for x in out["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert sorted(x["text"] for x in out["results"]) == sorted(TEXTS)
    by_text = {x["text"]: x for x in out["results"]}
    assert by_text["北京天安门"]["cosine"] == pytest.approx(1.0, abs=1e-5)


def test_similarity_without_cross_encoder_sorted_by_cosine(tiny_dirs, tmp_path):
    r = run_cli(["similarity", "--embed-model", str(tiny_dirs["embed"]), "--source", "上海"],
                "\n".join(TEXTS).encode(), tmp=tmp_path)
    out = json.loads(r.stdout)
    cos = [x["cosine"] for x in out["results"]]
    assert cos == sorted(cos, reverse=True) and out["results"][0]["text"] == "上海"
    assert all(x["cross_score"] is None for x in out["results"])


def test_env_variables_choose_model_and_options(tiny_dirs, tmp_path):
    r = run_cli(["embed"], "北京天安门上海北京天安门\n".encode(), tmp=tmp_path,
                env_extra={"WENMO_EMBED_MODEL": str(tiny_dirs["embed"]), "WENMO_MAX_LENGTH": "6"})
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["truncated"] is True


@pytest.mark.parametrize(
    "stdin, extra, needle",
    [
        (b"", [], "输入为空"),
        (b"a\n\nb\n", [], "line 2 is blank"),
        ("好\n".encode() + b"\xff\n", [], "line 2 is not valid UTF-8"),
        (b"a\nb\nc\n", ["--max-texts", "2"], "the limit is 2"),
        (b"a\n", ["--format", "npy"], "give --output"),
        (b"a\n", ["--dtype", "fp8"], "invalid choice"),
        (b"a\n", ["--max-batch-tokens", "0"], "must be ≥ 1"),
    ],
)
def test_bad_input_exit_2_with_message(tiny_dirs, tmp_path, stdin, extra, needle):
    r = run_cli(["embed", "--model", str(tiny_dirs["embed"]), *extra], stdin, tmp=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2 and needle in err, err
    assert "Traceback" not in err and r.stdout == b""


def test_skip_blank(tiny_dirs, tmp_path):
    r = run_cli(["embed", "--model", str(tiny_dirs["embed"]), "--skip-blank"], b"a\n\nb\n", tmp=tmp_path)
    assert r.returncode == 0 and [json.loads(x)["text"] for x in r.stdout.decode().splitlines()] == ["a", "b"]


def test_missing_local_model(tmp_path):
    r = run_cli(["embed", "--model", str(tmp_path / "nope")], b"a\n", tmp=tmp_path)
    assert r.returncode == 2 and "no such directory" in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_model_id_offline_fails_at_start_with_fix(tmp_path):
    """The real ModelScope client against an unreachable hub (this machine has no route to it)."""
    r = run_cli(["embed", "--model", "iic/nlp_gte_sentence-embedding_chinese-large"], b"a\n", tmp=tmp_path,
                timeout=180)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "iic/nlp_gte_sentence-embedding_chinese-large" in err and str(tmp_path / "cache") in err
    assert "copy that directory" in err and "Traceback" not in err


def test_demo_mode_builds_and_uses_tiny_models(tmp_path):
    r = run_cli(["embed", "--demo"], "北京\n".encode(), tmp=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["dimension"] == 32
    assert (tmp_path / "state" / "demo-models" / "gte" / "config.json").exists()


def test_plan_command_prints_the_plan(tmp_path):
    r = run_cli(["plan", "--engine", "deepspeed", "--device", "cpu"], tmp=tmp_path,
                env_extra={"WENMO_LOG_LEVEL": "INFO"})
    assert r.returncode == 0
    plan = json.loads(r.stdout)
    assert plan["engine"] == "deepspeed" and plan["device"] == "cpu" and plan["dtype"] == "fp32"
    assert "zero_optimization: stage 2: not applied" in r.stderr.decode()


def test_bad_ds_config_fails_at_start(tiny_dirs, tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"inference": {"kernel_inject": true}}')
    r = run_cli(["embed", "--model", str(tiny_dirs["embed"]), "--ds-config", str(bad)], b"a\n", tmp=tmp_path)
    assert r.returncode == 2 and f"{bad}: key 'inference.kernel_inject'" in r.stderr.decode()


def test_deepspeed_engine_keeps_stdout_clean(tiny_dirs, tmp_path):
    r = run_cli(["embed", "--model", str(tiny_dirs["embed"]), "--engine", "deepspeed"], "北京\n上海\n".encode(),
                tmp=tmp_path, env_extra={"WENMO_LOG_LEVEL": "INFO"})
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]  # nothing but JSONL on stdout
    assert [row["text"] for row in rows] == ["北京", "上海"]
    assert "engine=deepspeed" in r.stderr.decode()
