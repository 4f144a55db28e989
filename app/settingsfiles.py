"""deploy.sh's two settings files: wenmo.env (generated, rewritten on every run) and wenmo.override.env (yours).

Each key is set in exactly one place: a key in the override file is left out of wenmo.env, with a comment saying
so. The override file is never rewritten; only the keys given as deploy.sh flags are replaced where they stand
(or appended), and the other launcher threshold is commented out when one is given (the launcher takes one of
WENMO_LAUNCHER_THRESHOLD_MIB and _RATIO). A hand edit of wenmo.env is not lost: the next run moves each edited
value to the override file (saying so) and keeps the edited file as wenmo.env.bak; `.wenmo.env.written`
remembers what was written, to tell an edit from our own output. Both files are read as systemd's
EnvironmentFile= reads them (`read_env`).

Standard library only (see app/hostprofile.py, which runs it).
"""

from __future__ import annotations

import datetime
import getpass
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.config import DEFAULT_CROSS_MODEL, DEFAULT_EMBED_MODEL, DEFAULT_NLU_MODEL, Settings
from app.errors import ConfigError, InputError

THRESHOLDS = ("WENMO_LAUNCHER_THRESHOLD_MIB", "WENMO_LAUNCHER_THRESHOLD_RATIO")
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Setting:
    key: str
    value: str
    why: str


def read_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them: comments (# ;) and blank lines skipped, one level
    of quotes removed, the last of duplicate keys wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        key = key.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if KEY.fullmatch(key):
            out[key] = value
    return out


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("WENMO_") or not KEY.fullmatch(key):
            raise InputError(f"--set {item!r}: expected WENMO_NAME=VALUE")
        out[key] = value
    return out


def base_settings(prefix: Path, state_dir: Path) -> list[Setting]:
    """What every installation gets before the machine's profile: serving, paths, models."""
    return [
        Setting("WENMO_HOST", "0.0.0.0", "address to bind: 0.0.0.0 = every interface (open the port in the cloud "
                "firewall); every page asks for the password"),
        Setting("WENMO_PORT", "7860", "port to serve on"),
        Setting("WENMO_MODEL_DIR", f"{prefix}/models", "ModelScope cache: id owner/name lives in <this>/owner/name"),
        Setting("WENMO_STATE_DIR", str(state_dir), "state: launcher events and status, demo models"),
        Setting("WENMO_DS_CONFIG", f"{prefix}/etc/ds_config.json",
                "the DeepSpeed config (yours to edit; deploy.sh keeps your edits)"),
        Setting("WENMO_EMBED_MODEL", DEFAULT_EMBED_MODEL, "GTE embedding model: ModelScope id or local directory"),
        Setting("WENMO_CROSS_MODEL", DEFAULT_CROSS_MODEL, "StructBERT cross-encoder: ModelScope id or local directory"),
        Setting("WENMO_NLU_MODEL", DEFAULT_NLU_MODEL, "RexUniNLU model: ModelScope id or local directory"),
        Setting("WENMO_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
        Setting("WENMO_LAUNCHER_DRAIN_S", "30",
                "seconds in-flight requests get after a stop or restart (the launcher passes it to the app)"),
    ]


@dataclass
class Plan:
    """What one run does to the two files, and the settings the service will then see."""

    title: str
    generated: list[Setting]
    override: dict[str, str]  # the override file's values after this run
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value, why) to put in the override
    disable: list[str] = field(default_factory=list)  # keys to comment out there
    messages: list[str] = field(default_factory=list)
    effective: dict[str, str] = field(default_factory=dict)


class SettingsFiles:
    def __init__(self, etc: Path, prefix: Path, state_dir: Path) -> None:
        self.etc, self.prefix, self.state_dir = etc, prefix, state_dir
        self.generated = etc / "wenmo.env"
        self.written = etc / ".wenmo.env.written"
        self.override = etc / "wenmo.override.env"

    def plan(self, title: str, profile: Sequence[Setting], flags: Mapping[str, str]) -> Plan:
        ours = read_env(_text(self.override))
        plan = Plan(title, [*base_settings(self.prefix, self.state_dir), *profile], dict(ours))
        self._move_hand_edits(plan)
        for key, value in flags.items():
            plan.override[key] = value
            plan.changes.append((key, value, "set with a deploy.sh flag"))
            other = THRESHOLDS[1 - THRESHOLDS.index(key)] if key in THRESHOLDS else None
            if other and other in plan.override:  # the launcher refuses both: the new one replaces the other
                del plan.override[other]
                plan.disable.append(other)
        if all(k in plan.override for k in THRESHOLDS):
            raise ConfigError(f"{self.override} sets both {THRESHOLDS[0]} and {THRESHOLDS[1]}; the launcher takes "
                              "one of them: delete the other line")
        threshold_overridden = any(k in plan.override for k in THRESHOLDS)
        plan.effective = {s.key: s.value for s in plan.generated
                          if not (threshold_overridden and s.key in THRESHOLDS)}
        plan.effective.update(plan.override)
        _validate(plan.effective, self.override)
        return plan

    def _move_hand_edits(self, plan: Plan) -> None:
        if not (self.generated.exists() and self.written.exists()):
            return
        now, written = read_env(_text(self.generated)), read_env(_text(self.written))
        for key, value in now.items():
            if written.get(key) != value and key not in plan.override:
                plan.messages.append(f"warning: {self.generated} was edited by hand ({key}={value}): moving that "
                                     f"to {self.override}")
                plan.override[key] = value
                plan.changes.append((key, value, "moved from wenmo.env, where it was edited by hand"))
        for key in written.keys() - now.keys():
            plan.messages.append(f"warning: {key} was deleted from {self.generated} by hand; deploy.sh writes it "
                                 f"again (to change it, set it in {self.override})")

    def render_generated(self, plan: Plan) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())  # not datetime.UTC: Python 3.10 has none
        threshold_overridden = any(k in plan.override for k in THRESHOLDS)
        out = [
            f"# Wenmo service settings, generated by deploy.sh on {stamp}.",
            f"# Profile: {plan.title}.",
            "#",
            "# deploy.sh REWRITES this file on every run. Put your own values in",
            f"#   {self.override}",
            "# (same KEY=VALUE format, read after this file, so its values win; keys set there are left out here),",
            f"# then: {self.prefix}/src/deploy.sh restart. A hand edit made here anyway is moved there by the next",
            "# run.",
            "# WENMO_<NAME> is the app's --<name> (python -m app serve --help); WENMO_LAUNCHER_<NAME> the",
            "# launcher's (python -m launcher --help). The password is not here: see credentials/wenmo-auth.",
        ]
        for s in plan.generated:
            out += ["", f"# {s.why}"]
            if s.key in plan.override:
                out.append(f"# {s.key}: set in wenmo.override.env ({plan.override[s.key]})")
            elif threshold_overridden and s.key in THRESHOLDS:
                out.append(f"# {s.key}: not used, a threshold is set in wenmo.override.env")
            else:
                out.append(f"{s.key}={s.value}")
        return "\n".join(out) + "\n"

    def render_override(self, plan: Plan) -> str:
        stamp = datetime.date.today().isoformat()
        lines = (_text(self.override) or OVERRIDE_HEADER.format(src=self.prefix / "src")).splitlines()
        for key in plan.disable:
            lines = [f"# (disabled by deploy.sh on {stamp}: the launcher takes one threshold) {x}"
                     if _sets(x, key) else x for x in lines]
        for key, value, why in plan.changes:
            at = [i for i, x in enumerate(lines) if _sets(x, key)]
            if at:  # replaced where it stands; later duplicates dropped
                lines[at[0]] = f"{key}={value}"
                lines = [x for i, x in enumerate(lines) if i not in at[1:]]
            else:
                lines += [f"# {why} ({stamp})", f"{key}={value}"]
        return "\n".join(lines) + "\n"

    def write(self, plan: Plan, dry_run: bool) -> None:
        for message in plan.messages:
            print(f"    {message}", file=sys.stderr)
        if not self.override.exists() or plan.changes or plan.disable:
            put_file(self.override, self.render_override(plan), dry_run)
            for key, value, _ in plan.changes:
                print(f"    wenmo.override.env: {key}={value}")
        if (not dry_run and self.generated.exists() and self.written.exists()
                and self.generated.read_bytes() != self.written.read_bytes()):
            backup = self.generated.with_name("wenmo.env.bak")
            backup.write_bytes(self.generated.read_bytes())
            print(f"    your edited wenmo.env is kept as {backup}")
        generated = self.render_generated(plan)
        put_file(self.generated, generated, dry_run)
        if not dry_run:
            put_file(self.written, generated, False)


OVERRIDE_HEADER = """\
# Your Wenmo settings: KEY=VALUE lines read after wenmo.env, so they win over the generated profile.
# deploy.sh never rewrites this file; it only adds or replaces the keys you give it as flags
# (--port, --host, --models-dir, --max-*, --threshold-mib, --drain-s, --set NAME=VALUE).
# After editing: {src}/deploy.sh restart (or re-run deploy.sh).
# Example:
# WENMO_MAX_QUEUE=64"""


def _sets(line: str, key: str) -> bool:
    return re.match(rf"\s*(export\s+)?{re.escape(key)}\s*=", line) is not None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def put_file(path: Path, text: str, dry_run: bool, show: bool = True) -> None:
    """Write `text` to `path` atomically (mode 0644), or say so in a dry run (with the text, when `show`)."""
    if dry_run:
        print(f"    would write {path} (mode 0644, owner {getpass.getuser()})")
        if show:
            print(f"----- {path} -----\n{text.rstrip(chr(10))}\n----- end of {path} -----")
        return
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _validate(effective: Mapping[str, str], source: Path) -> None:
    """The app's own checks (app/config.py) on its values, and a number for the drain deploy.sh waits on."""
    try:
        Settings.from_env(effective)
    except ConfigError as e:
        raise ConfigError(f"{e.message} (from {source} or a deploy.sh flag)") from None
    drain = effective.get("WENMO_LAUNCHER_DRAIN_S", "30")
    if not re.fullmatch(r"\d+(\.\d+)?", drain):
        raise ConfigError(f"WENMO_LAUNCHER_DRAIN_S={drain} is not a number of seconds (from {source})")
