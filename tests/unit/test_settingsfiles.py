"""deploy.sh's settings files, written by Python: generated + override, hand edits moved, one place per key."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.hostprofile import GpuFacts, profile_for
from app.settingsfiles import SettingsFiles, parse_assignments, read_env

A10 = profile_for([GpuFacts("NVIDIA A10", 23028, (8, 6))])


def files(tmp_path: Path) -> SettingsFiles:
    (tmp_path / "etc").mkdir(exist_ok=True)
    return SettingsFiles(tmp_path / "etc", tmp_path, tmp_path / "state")


def write(f: SettingsFiles, flags: dict[str, str] | None = None):
    plan = f.plan(A10.title, A10.settings, flags or {})
    f.write(plan, dry_run=False)
    return plan


def test_read_env_reads_as_systemd_does():
    text = "# c\n; c\n\nexport A=1\nB = 2\nC=\"q u\"\nD='x'\nA=3\nnot a line\n"
    assert read_env(text) == {"A": "3", "B": " 2", "C": "q u", "D": "x"}


def test_a_flag_goes_to_the_override_and_leaves_the_generated_key_out(tmp_path):
    f = files(tmp_path)
    plan = write(f, {"WENMO_PORT": "8080"})
    gen, ours = read_env(f.generated.read_text()), read_env(f.override.read_text())
    assert ours["WENMO_PORT"] == "8080" and "WENMO_PORT" not in gen
    assert "# WENMO_PORT: set in wenmo.override.env (8080)" in f.generated.read_text()
    assert plan.effective["WENMO_PORT"] == "8080" and plan.effective["WENMO_MAX_BATCH_TOKENS"] == "16384"
    write(f, {"WENMO_PORT": "9090"})  # replaced where it stands, not appended
    assert f.override.read_text().count("WENMO_PORT=") == 1 and read_env(f.override.read_text())["WENMO_PORT"] == "9090"


def test_a_hand_edit_moves_to_the_override_with_a_bak(tmp_path, capsys):
    f = files(tmp_path)
    write(f)
    edited = f.generated.read_text().replace("WENMO_MAX_BATCH_SIZE=128", "WENMO_MAX_BATCH_SIZE=7")
    f.generated.write_text(edited)
    write(f)
    said = capsys.readouterr()
    assert "was edited by hand (WENMO_MAX_BATCH_SIZE=7)" in said.err
    assert read_env(f.override.read_text())["WENMO_MAX_BATCH_SIZE"] == "7"
    assert "WENMO_MAX_BATCH_SIZE" not in read_env(f.generated.read_text())
    assert (f.etc / "wenmo.env.bak").read_text() == edited
    write(f)
    assert "edited by hand" not in capsys.readouterr().err


def test_one_threshold_replaces_the_other(tmp_path):
    f = files(tmp_path)
    f.override.write_text("WENMO_LAUNCHER_THRESHOLD_RATIO=0.7\n")
    plan = write(f, {"WENMO_LAUNCHER_THRESHOLD_MIB": "12000"})
    ours = f.override.read_text()
    assert "# (disabled by deploy.sh on" in ours and "WENMO_LAUNCHER_THRESHOLD_RATIO" not in read_env(ours)
    assert plan.effective["WENMO_LAUNCHER_THRESHOLD_MIB"] == "12000"
    assert "WENMO_LAUNCHER_THRESHOLD_MIB=" not in f.generated.read_text().replace("# WENMO_LAUNCHER_THRESHOLD_MIB", "")


def test_both_thresholds_in_the_override_is_an_error(tmp_path):
    f = files(tmp_path)
    f.override.write_text("WENMO_LAUNCHER_THRESHOLD_RATIO=0.7\nWENMO_LAUNCHER_THRESHOLD_MIB=9000\n")
    with pytest.raises(ConfigError, match="sets both WENMO_LAUNCHER_THRESHOLD_MIB and WENMO_LAUNCHER_THRESHOLD_RATIO"):
        f.plan(A10.title, A10.settings, {})


def test_a_bad_value_is_refused_by_the_apps_own_checks(tmp_path):
    f = files(tmp_path)
    f.override.write_text("WENMO_PORT=http\n")
    with pytest.raises(ConfigError, match=r"WENMO_PORT='http' is not an integer.*wenmo.override.env"):
        f.plan(A10.title, A10.settings, {})


def test_set_needs_a_wenmo_name():
    assert parse_assignments(["WENMO_MAX_QUEUE=64", "WENMO_X=a=b"]) == {"WENMO_MAX_QUEUE": "64", "WENMO_X": "a=b"}
    with pytest.raises(Exception, match="expected WENMO_NAME=VALUE"):
        parse_assignments(["MAX_QUEUE=3"])


def test_a_dry_run_writes_nothing(tmp_path, capsys):
    f = files(tmp_path)
    f.write(f.plan(A10.title, A10.settings, {"WENMO_PORT": "8080"}), dry_run=True)
    out = capsys.readouterr().out
    assert f"----- {f.generated} -----" in out and f"----- {f.override} -----" in out
    assert not f.generated.exists() and not f.override.exists()
