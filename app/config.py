"""Settings: one frozen dataclass, read from the environment here and nowhere else.

Every field has one name everywhere: field `max_batch_tokens` = env `WENMO_MAX_BATCH_TOKENS` = flag
`--max-batch-tokens`. Each field's `scope` says which commands take its flag (app/cli.py builds the flags from
it, no list of its own): `common` every command that runs a model, `serve` only the server, `env` no command
(secrets, which a command line would show to `ps`). The README's settings table has one row per field
(tests/unit/test_settings_names.py holds the three together). Invalid values fail at start with the valid
choices in the message.
Two variables outside that scheme are read here too: systemd's CREDENTIALS_DIRECTORY, where a `wenmo-auth`
credential (LoadCredential=) is the auth file when neither WENMO_AUTH nor WENMO_AUTH_FILE is given; and
Kubernetes' KUBERNETES_SERVICE_HOST (set in every pod), where a password generated per replica would be wrong.
Imports nothing from the rest of the app except the error tree.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_EMBED_MODEL = "iic/nlp_gte_sentence-embedding_chinese-large"
DEFAULT_CROSS_MODEL = "iic/nlp_structbert_sentence-similarity_chinese-large"
DEFAULT_NLU_MODEL = "iic/nlp_deberta_rex-uninlu_chinese-base"

DEVICE_HINT = "auto, cpu, cuda or cuda:N"
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
ENGINE_CHOICES = ("auto", "torch", "deepspeed")
SYSTEMD_CREDENTIAL = "wenmo-auth"  # the credential's name in $CREDENTIALS_DIRECTORY


SCOPES = ("common", "serve", "env")  # which commands take a field's flag: see the module docstring


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, *, scope: str = "common",
         secret: bool = False) -> Any:
    assert scope in SCOPES, scope
    return field(default=default, metadata={"help": help, "choices": choices, "scope": scope}, repr=not secret)


@dataclass(frozen=True)
class Settings:
    # runtime plan
    device: str = _opt("auto", f"where models run: {DEVICE_HINT}")
    dtype: str = _opt("auto", "weights/activations dtype (auto: fp16/bf16 on CUDA, fp32 on CPU; int8: CPU dynamic "
                              "quantisation)", DTYPE_CHOICES)
    engine: str = _opt("auto", "inference engine (auto: deepspeed on CUDA, torch on CPU)", ENGINE_CHOICES)
    ds_config: str = _opt(str(REPO_ROOT / "ds_config.json"), "DeepSpeed config file")
    model_dir: str = _opt(
        str(Path.home() / ".cache" / "wenmo" / "models"), "cache directory for downloaded ModelScope models"
    )
    # batching and limits
    max_length: int = _opt(0, "cap on tokens per text (0: each model's own maximum)")
    max_batch_tokens: int = _opt(16384, "token budget per forward pass (longest × batch size)")
    max_batch_size: int = _opt(128, "texts per forward pass at most")
    min_batch_fill: str = _opt("auto", "a forward's real tokens / padded cells at least, 0 to 1 (auto: 0.9 on CPU, "
                                       "0.5 on CUDA)")
    cudnn_attention: str = _opt("off", "on: torch may run attention on CUDA with cuDNN's kernel, which keeps a "
                                       "compiled graph for every input shape it meets, for the life of the process "
                                       "(pytorch/pytorch#190388); off: the flash / memory-efficient kernels",
                                ("on", "off"))
    length_buckets: str = _opt("on", "on: a forward pads its rows up a fixed ladder of lengths (multiples of 8 to 64, "
                                     "then four steps per doubling: at most a quarter more), so the libraries under "
                                     "torch meet a bounded set of shapes and their per-shape caches stop growing; "
                                     "off: to the longest row only", ("on", "off"))
    onednn_primitive_cache: str = _opt("auto", "CPU: compiled oneDNN primitives kept, one per input shape, ~28 KiB "
                                               "each (auto: none — each GELU compiles its own, ~0.1 ms, and the heap "
                                               "keeps no per-shape state — unless ONEDNN_PRIMITIVE_CACHE_CAPACITY in "
                                               "the environment says; a number: that many entries, 6,063 for every "
                                               "shape the length ladder allows with the default budget)")
    batch_across_requests: str = _opt("on", "on: the engine forms each forward from the work of every waiting "
                                            "request (one queue per model); off: each request runs its own "
                                            "forwards (for comparison)", ("on", "off"))
    max_texts: int = _opt(10000, "texts per call at most")
    max_chars: int = _opt(20000, "characters per text at most")
    nlu_max_forwards: int = _opt(4096, "RexUniNLU windows (forward passes) one request may run, all schema levels "
                                       "together; beyond it the request is refused (422)")
    nlu_max_paths: int = _opt(10000, "RexUniNLU spans one request may find (output paths plus the prefixes of "
                                     "nested types); beyond it the request is refused (422)")
    # `serve` only: a shell command runs until it is done or interrupted.
    request_timeout_s: float = _opt(300.0, "seconds one inference request may run (waiting for a slot not "
                                           "counted); the work stops there and the request gets 504", scope="serve")
    # models (`serve` only: embed, similarity and nlu name theirs with options of their own, such as --model)
    embed_model: str = _opt(DEFAULT_EMBED_MODEL, "GTE embedding model: local directory or ModelScope id",
                            scope="serve")
    cross_model: str = _opt(DEFAULT_CROSS_MODEL, "StructBERT cross-encoder: local directory or ModelScope id",
                            scope="serve")
    nlu_model: str = _opt(DEFAULT_NLU_MODEL, "RexUniNLU model: local directory or ModelScope id", scope="serve")
    # process
    state_dir: str = _opt(str(Path.home() / ".local" / "state" / "wenmo"),
                          "state directory (generated password, demo models, launcher events)")
    log_level: str = _opt("INFO", "log level", ("DEBUG", "INFO", "WARNING", "ERROR"))
    # serving
    host: str = _opt("127.0.0.1", "address to bind (0.0.0.0 for every interface)", scope="serve")
    port: int = _opt(7860, "port to listen on", scope="serve")
    max_concurrent: int = _opt(0, "requests admitted to the engine at once (0: with batch_across_requests on, 32; "
                                  "off: 2 on a GPU, 1 per 2 CPU cores)", scope="serve")
    max_queue: int = _opt(16, "requests waiting for a slot before new ones are answered busy", scope="serve")
    drain_s: float = _opt(30.0, "seconds in-flight requests get to finish after SIGTERM", scope="serve")
    max_upload_mib: int = _opt(20, "largest request body, MiB: one upload request (all its files together) or "
                                   "one API call", scope="serve")
    max_upload_files: int = _opt(10, "files in one upload request at most", scope="serve")
    max_file_store_mib: int = _opt(1024, "disk that uploaded and exported files may take together, MiB (oldest "
                                         "removed first; an upload or export that cannot fit even then gets 507)",
                                  scope="serve")
    max_file_store_age_s: float = _opt(3600.0, "seconds an uploaded or exported file is kept at most (refused, then "
                                               "removed, after that)", scope="serve")
    tune_keep_jobs: int = _opt(20, "Tune-tab jobs whose files are kept (the uploaded pairs, events, log; never the "
                                   "tuned checkpoint): the oldest are removed when a new job starts", scope="serve")
    auth: str = _opt("", "user:password for HTTP basic auth (environment only)", scope="env", secret=True)
    auth_file: str = _opt("", "file of user:password or user:salted-hash lines (environment only; default: "
                              f"$CREDENTIALS_DIRECTORY/{SYSTEMD_CREDENTIAL} when systemd passes it)", scope="env")
    auth_max_failures: int = _opt(10, "wrong logins from one client address within 5 minutes that lock it out",
                                  scope="serve")
    auth_lockout_s: float = _opt(300.0, "seconds a locked-out client address gets 429 for new logins", scope="serve")
    auth_max_checks: int = _opt(4, "password checks (salted hashes) running at once, off the event loop; more "
                                   "logins at the same moment get 429 at once", scope="serve")
    trusted_proxies: str = _opt("", "comma-separated addresses or networks of reverse proxies whose "
                                    "X-Forwarded-For names the client (empty: none; the TCP peer is the client)",
                                scope="serve")
    ui_sessions: int = _opt(256, "UI sessions (browser tabs and /gradio_api calls) whose Gradio state the server "
                                 "keeps, ~100 KB each; the least recently used is forgotten first", scope="serve")
    heap_snapshot_dir: str = _opt("", "folder for Python heap snapshots: when set, the server traces allocations "
                                      "(slower) and writes a snapshot on each SIGUSR1 (environment only; a soak "
                                      "diagnostic)", scope="env")

    def replace(self, **changes: Any) -> Settings:
        """Apply overrides (e.g. CLI flags); `None` means "not given" and keeps the current value."""
        given = {k: v for k, v in changes.items() if v is not None and k in FIELD_NAMES}
        return validate(dataclasses.replace(self, **given))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = parse_value(f, raw, source=env_name(f.name))
        if not values.get("auth") and not values.get("auth_file"):
            credential = systemd_credential(env)
            if credential is not None:
                values["auth_file"] = str(credential)
        return validate(cls(**values))


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


def systemd_credential(env: Mapping[str, str]) -> Path | None:
    """`$CREDENTIALS_DIRECTORY/wenmo-auth` when systemd handed the service that credential, else None."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / SYSTEMD_CREDENTIAL
    return path if path.is_file() else None


def in_kubernetes(env: Mapping[str, str] | None = None) -> bool:
    """In a Kubernetes pod (the kubelet sets KUBERNETES_SERVICE_HOST in every container): there each replica would
    generate a password of its own in its own state folder, so the server refuses to generate one."""
    return bool((os.environ if env is None else env).get("KUBERNETES_SERVICE_HOST"))


def describe_auth_file(path: str, env: Mapping[str, str] | None = None) -> str:
    """Where the auth file comes from, for the start-up log: its path and source, never its content."""
    credential = systemd_credential(os.environ if env is None else env)
    if credential is not None and Path(path) == credential:
        return f"systemd credential {path}"
    return f"WENMO_AUTH_FILE={path}"


def env_name(field_name: str) -> str:
    return "WENMO_" + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def parse_value(f: dataclasses.Field, raw: str, source: str) -> Any:
    if f.type in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{source}={raw!r} is not an integer; give a whole number such as 512") from None
    if f.type in ("float", float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{source}={raw!r} is not a number; give one such as 30") from None
    return raw


def validate(s: Settings) -> Settings:
    for f in dataclasses.fields(s):
        choices = f.metadata.get("choices")
        value = getattr(s, f.name)
        if choices and value not in choices:
            raise ConfigError(
                f"{flag_name(f.name)} / {env_name(f.name)}: {value!r} is not valid; choose one of {', '.join(choices)}"
            )
        if f.name in ("auth_lockout_s", "request_timeout_s", "max_file_store_age_s"):  # any positive time (tests)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{flag_name(f.name)} / {env_name(f.name)} must be a number of seconds > 0, "
                                  f"got {value}")
        elif f.type in ("int", int, "float", float):
            minimum = 0 if f.name in ("max_length", "max_concurrent", "max_queue", "drain_s") else 1
            if not math.isfinite(value):  # float("nan") and float("inf") parse, and `nan < 0` is False
                raise ConfigError(f"{flag_name(f.name)} / {env_name(f.name)} must be a finite number, got {value}")
            if value < minimum:
                raise ConfigError(f"{flag_name(f.name)} / {env_name(f.name)} must be ≥ {minimum}, got {value}")
    if s.min_batch_fill != "auto":
        try:
            fill = float(s.min_batch_fill)
        except ValueError:
            fill = -1.0
        if not 0.0 <= fill <= 1.0:
            raise ConfigError(f"--min-batch-fill / WENMO_MIN_BATCH_FILL: {s.min_batch_fill!r} is not valid; give auto "
                              "or a number from 0 (token budget only) to 1 (only equal lengths share a forward)")
    if s.onednn_primitive_cache != "auto" and not s.onednn_primitive_cache.isdigit():
        raise ConfigError(f"--onednn-primitive-cache / WENMO_ONEDNN_PRIMITIVE_CACHE: {s.onednn_primitive_cache!r} is "
                          "not valid; give auto or a whole number of entries such as 8192 (0 turns the cache off)")
    d = s.device
    if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
        raise ConfigError(f"--device / WENMO_DEVICE: {d!r} is not valid; use {DEVICE_HINT}")
    return s
