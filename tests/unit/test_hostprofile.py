"""`python -m app profile`: GPU facts in, settings out, through the GpuFacts interface (no GPU needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.engine import runtime
from app.errors import InputError
from app.hostprofile import GpuFacts, profile_for

ROOT = Path(__file__).resolve().parents[2]
H100 = GpuFacts("NVIDIA H100 80GB HBM3", 81559, (9, 0))
T4 = GpuFacts("Tesla T4", 15360, (7, 5))


def values(profile) -> dict[str, str]:
    return {s.key: s.value for s in profile.settings}


def test_an_80_gb_compute_capability_9_card():
    p = profile_for([H100])
    assert values(p) == {"WENMO_DEVICE": "cuda", "WENMO_MAX_BATCH_TOKENS": "65536", "WENMO_MAX_BATCH_SIZE": "256",
                         "WENMO_MAX_LENGTH": "512", "WENMO_LAUNCHER_THRESHOLD_MIB": str(81559 * 85 // 100)}
    assert p.title.startswith("80 GB class") and "compute capability 9.0" in p.title
    assert p.notes[0].startswith("dtype: bf16 ")


def test_a_16_gb_compute_capability_7_5_card():
    p = profile_for([T4])
    assert values(p) == {"WENMO_DEVICE": "cuda", "WENMO_MAX_BATCH_TOKENS": "8192", "WENMO_MAX_BATCH_SIZE": "64",
                         "WENMO_MAX_LENGTH": "512", "WENMO_LAUNCHER_THRESHOLD_MIB": str(15360 * 85 // 100)}
    assert p.notes[0].startswith("dtype: fp16 ")


def test_the_dtype_is_the_plans_rule_on_the_capability(monkeypatch):
    """The profile asks the plan's own rule: change the rule and the profile follows."""
    monkeypatch.setattr("app.hostprofile.bf16_at_full_rate", lambda cc: cc[0] >= 10)
    assert profile_for([H100]).notes[0].startswith("dtype: fp16 ")
    assert runtime.bf16_at_full_rate((8, 0)) and not runtime.bf16_at_full_rate((7, 5))


def test_ds_config_precision_blocks_still_decide(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text('{"bf16": {"enabled": false}, "fp16": {"enabled": true}}')
    assert profile_for([H100], ds).notes[0].startswith("dtype: fp16 ")


def test_several_gpus_are_tuned_for_gpu_0_and_named():
    p = profile_for([T4, H100])
    assert values(p)["WENMO_MAX_BATCH_TOKENS"] == "8192"
    assert any("2 GPUs: Wenmo runs on GPU 0" in n and "H100" in n for n in p.notes)


def test_no_gpu_is_the_cpu_profile():
    p = profile_for([])
    assert p.title == "CPU" and values(p)["WENMO_DEVICE"] == "cpu"
    assert values(p)["WENMO_LAUNCHER_THRESHOLD_RATIO"] == "0.80" and "WENMO_LAUNCHER_THRESHOLD_MIB" not in values(p)


@pytest.mark.parametrize("text, expected", [
    ("NVIDIA A10, 23028, 8.6", GpuFacts("NVIDIA A10", 23028, (8, 6))),
    ("Odd, name, with commas, 16384, 7.0", GpuFacts("Odd, name, with commas", 16384, (7, 0))),
])
def test_gpu_facts_from_nvidia_smi_csv(text, expected):
    assert GpuFacts.parse(text) == expected


@pytest.mark.parametrize("text", ["A10", "A10, 23028", "A10, lots, 8.6", "A10, 23028, [N/A]"])
def test_bad_gpu_facts_say_the_format(text):
    with pytest.raises(InputError, match="expected NAME,MEMORY_MIB,COMPUTE_CAPABILITY"):
        GpuFacts.parse(text)


def test_on_this_machine_without_a_gpu_it_prints_the_cpu_profile_with_the_standard_library_alone():
    """deploy.sh runs it with the system Python before the virtualenv exists: -S -I leaves out site-packages."""
    r = subprocess.run([sys.executable, "-S", "-m", "app", "profile"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# profile: CPU\n") and "\nWENMO_DEVICE=cpu\n" in r.stdout


def test_the_cli_has_the_same_command():
    r = subprocess.run([sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))",
                        "profile", "--gpu", "Tesla T4, 15360, 7.5"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "\nWENMO_MAX_BATCH_TOKENS=8192\n" in r.stdout and "# dtype: fp16 " in r.stdout
    bad = subprocess.run([sys.executable, "-m", "app", "profile", "--gpu", "T4"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --gpu 'T4': expected")
    assert "Traceback" not in bad.stderr
