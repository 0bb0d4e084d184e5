"""One typed settings tree, read once from a TOML file plus ``APPLIANCE_*`` environment variables.

Each group is a frozen dataclass; every field carries its documentation in ``metadata["doc"]``
so the operator's table of keys (``appliance config-table``, docs/configuration.md) is generated
from this file and cannot drift from it.

Environment overrides are ``APPLIANCE_<GROUP>_<KEY>`` in upper case, e.g.
``APPLIANCE_SERVER_PORT=9000`` or ``APPLIANCE_AUDIT_MODE=relaxed``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""


def _doc(text: str, default: Any, **kw: Any) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: default.copy(), metadata={"doc": text}, **kw)
    return field(default=default, metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class ServerSettings:
    host: str = _doc("Address to bind. Loopback by default; another address needs authentication "
                     "or `--insecure`.", "127.0.0.1")
    port: int = _doc("TCP port.", 8080)
    models: Path = _doc("Model repository: `<models>/<name>/model.toml` and `<name>/<version>/`.",
                        Path("models"))
    state_dir: Path = _doc("Writable state: audit database, compiled-model cache, key stores.",
                           Path("state"))
    log_level: str = _doc("Log level: DEBUG, INFO, WARNING, ERROR.", "INFO")
    drain_grace_s: float = _doc("On SIGTERM, how long in-flight requests may take to finish; also how long "
                                "a version swapped out by a model load may take to finish its requests.", 20.0)
    models_poll_interval_s: float = _doc("Look for new or changed models and versions in the repository this "
                                         "often and load them as `POST /v2/repository/models/{m}/load` would "
                                         "(0 = off: only explicit load calls change what serves).", 0.0)
    insecure: bool = _doc("Allow serving without authentication on a non-loopback address.", False)
    workers: str = _doc("Worker processes serving the same ports (`SO_REUSEPORT`), each with its own event loop, "
                        "batcher and copy of the models, beside one audit writer process, under one supervising "
                        "main process. `auto`: one per usable core, fewer when the models would not fit in the "
                        "available memory that many times. `1`: a single process (no supervisor, the audit "
                        "writer a thread).", "auto")

    @property
    def limit_share(self) -> int:
        """How many worker processes share the server-wide limits (admission caps, rates): the
        number ``appliance serve`` pins before forking them; 1 for a single process."""
        return int(self.workers) if self.workers.isdigit() else 1


@dataclass(frozen=True)
class HttpSettings:
    max_body_bytes: int = _doc("Largest request body accepted (after gzip inflation); larger → 413.",
                               64 * 1024 * 1024)
    compress_min_bytes: int = _doc("Gzip JSON responses at least this large when the client "
                                   "accepts gzip.", 8192)
    read_timeout_s: float = _doc("Time allowed to receive an authorized request's body; slower "
                                 "clients get 408 and the connection is closed.", 30.0)
    keepalive_timeout_s: float = _doc("Idle connections are closed after this; also the time allowed "
                                      "for a complete request line and headers to arrive (slow-loris "
                                      "clients are cut off).", 75.0)


@dataclass(frozen=True)
class GrpcSettings:
    port: int = _doc("TCP port of the gRPC endpoint (the Open Inference Protocol's `inference.GRPCInferenceService`, "
                     "Triton-compatible) on `server.host`, with the same TLS, credentials, scopes, admission and "
                     "audit as REST; 0 = off.", 8081)
    max_message_bytes: int = _doc("Largest gRPC message received or sent; a larger request is refused "
                                  "(RESOURCE_EXHAUSTED) before it is decoded.", 64 * 1024 * 1024)


@dataclass(frozen=True)
class TlsSettings:
    cert_file: Path | None = _doc("PEM certificate chain; enables HTTPS.", None)
    key_file: Path | None = _doc("PEM private key for `cert_file`.", None)
    client_ca_file: Path | None = _doc("CA bundle for client certificates (mutual TLS).", None)
    require_client_cert: bool = _doc("Refuse TLS handshakes without a client certificate "
                                     "signed by `client_ca_file`.", False)


@dataclass(frozen=True)
class LimitsSettings:
    max_tensor_elements: int = _doc("Largest element count of one input tensor; larger → 400 "
                                    "before anything is allocated.", 16 * 1024 * 1024)
    adaptive: bool = _doc("Adaptive admission: each model version's in-flight limit follows the latency "
                          "its requests see (it grows while latency stays within `adaptive_tolerance` × the "
                          "measured no-load latency, and shrinks when only latency grows); requests past it "
                          "get 429 + Retry-After at once, before their body is read. Off: the fixed "
                          "`max_concurrency` plus a waiting queue of `max_queue`. `model.toml` may override.",
                          True)
    adaptive_tolerance: float = _doc("How much slower than no-load the slowest 1 % of requests may become "
                                     "before the adaptive limit stops growing or shrinks (a ratio of "
                                     "99th-percentile latencies).", 1.5)
    max_concurrency: int = _doc("Per-version in-flight cap: the adaptive limit's ceiling, or the fixed "
                                "limit when `adaptive` is off; `model.toml` may override.", 64)
    max_queue: int = _doc("Waiting-queue length beyond the fixed limit (adaptive admission queues "
                          "nothing); past it → 429. `model.toml` may override.", 256)
    max_queued_bytes: int = _doc("Per-model cap on input bytes held by queued requests.",
                                 256 * 1024 * 1024)
    default_timeout_ms: int = _doc("Deadline for requests that carry none (0 = no deadline).", 0)
    rate_limit_rps: float = _doc("Per-principal request rate (0 = unlimited); excess → 429.", 0.0)
    rate_limit_burst: int = _doc("Burst allowed above `rate_limit_rps`.", 100)
    refusals_per_s: float = _doc("429s answered at once per second; past it each further 429 waits "
                                 "its turn (at most its Retry-After), so clients that retry at once "
                                 "cannot spend the core admitted requests need (0 = never wait).", 250.0)


@dataclass(frozen=True)
class BatchingSettings:
    enabled: bool = _doc("Dynamic batching for models with `max_batch_size > 0`.", True)
    max_queue_delay_us: int = _doc("Default longest wait to fill a batch while all runtime slots "
                                   "are busy (microseconds); `model.toml` may override.", 500)


@dataclass(frozen=True)
class CacheSettings:
    max_bytes: int = _doc("Byte budget of the prediction cache (all models).", 64 * 1024 * 1024)
    ttl_s: float = _doc("Lifetime of a cached prediction.", 300.0)


@dataclass(frozen=True)
class RuntimeSettings:
    device: str = _doc("`auto` (GPU when the runtime reports one, else CPU), `CPU`, `GPU`, "
                       "`GPU.1`, `CUDA`…; `model.toml` may override.", "auto")
    performance_hint: str = _doc("OpenVINO `PERFORMANCE_HINT`: THROUGHPUT or LATENCY.",
                                 "THROUGHPUT")
    nireq: int = _doc("Runtime slots per model version (0 = the compiled model's optimal "
                      "number of infer requests).", 0)
    compiled_cache: bool = _doc("Keep OpenVINO compiled-model blobs under "
                                "`<state_dir>/ov-cache` so restarts are fast.", True)
    threads: int = _doc("Inference threads per model version, all its runtime slots together (0 = the "
                        "CPUs this process may use).", 0)


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = _doc("Record every prediction and administrative action.", True)
    mode: Literal["strict", "relaxed"] = _doc("`strict`: answer only after the record is "
                                              "committed; `relaxed`: write asynchronously.",
                                              "strict")
    database: Path | None = _doc("SQLite file (default `<state_dir>/audit.db`).", None)
    key_file: Path | None = _doc("AES-256 key file (default: systemd credential `audit.key` or "
                                 "`<state_dir>/keys/audit.key`).", None)
    signing_key_file: Path | None = _doc("Ed25519 checkpoint signing key (default: credential "
                                         "`audit-signing.key` or `<state_dir>/keys/`).", None)
    group_commit_ms: float = _doc("Under load (the previous commit carried several records), how "
                                  "long the audit writer gathers records into one transaction and "
                                  "fsync. A lone record at light load is committed at once, and the "
                                  "window ends early once every request in flight is waiting on the "
                                  "log. Relaxed records, which nobody waits for, always wait out the "
                                  "window. 0: never wait (records arriving during a commit still "
                                  "share the next one).",
                                  2.0)
    checkpoint_every: int = _doc("Write a signed checkpoint after this many records.", 1000)
    checkpoint_interval_s: float = _doc("Also write a signed checkpoint when records are this old and "
                                        "not yet covered by one (bounds what a truncation can hide).",
                                        60.0)
    retention_days: float = _doc("The server deletes records older than this (signed purge anchor, the "
                                 "chain stays verifiable). 180 days: the six months the EU AI Act "
                                 "(Art. 19) asks of high-risk systems at least. 0 = keep forever.", 180.0)
    max_bytes: int = _doc("Size limit of the audit database (WAL included); past it the oldest records "
                          "are purged even if younger than `retention_days`, with a warning (log, "
                          "metric, status page). 0 = 20 % of the file system holding the database.", 0)
    retention_check_interval_s: float = _doc("How often the server enforces `retention_days` and "
                                             "`max_bytes` and measures the database for the capacity "
                                             "forecast (in a thread, never on the event loop).", 60.0)


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = _doc("Require a principal for everything but health endpoints. Also on "
                         "whenever a credential is configured (an API key, `jwks_file`, "
                         "`tls.client_ca_file`).", False)
    api_keys_file: Path | None = _doc("API-key store (hashes only); default "
                                      "`<state_dir>/api-keys.json`.", None)
    jwks_file: Path | None = _doc("JWKS file with the identity provider's public keys.", None)
    jwt_issuer: str = _doc("Required `iss` of bearer tokens.", "")
    jwt_audience: str = _doc("Required `aud` of bearer tokens.", "")
    jwt_algorithms: list[str] = _doc("Accepted JWT algorithms (never `none`).", ["RS256", "ES256"])
    jwt_scope_claim: str = _doc("Claim holding scopes (space-separated string or list).", "scope")
    failure_limit_per_minute: int = _doc("Authentication failures allowed per client address "
                                         "per minute before 429 (0 = no limit).", 30)
    mtls_scopes: list[str] = _doc("Scopes of a principal authenticated by a client certificate "
                                  "(its subject CN is the principal's name).", ["infer", "read"])
    mtls_subjects: list[str] = _doc("Client-certificate common names allowed in (empty = any "
                                    "certificate signed by `tls.client_ca_file`).", [])
    model_key_file: Path | None = _doc("AES-256 key for encrypted model artifacts (default: "
                                       "credential `model.key` or `<state_dir>/keys/model.key`).", None)


@dataclass(frozen=True)
class ObservabilitySettings:
    request_log: bool = _doc("One JSON log line per request.", True)
    otlp_endpoint: str = _doc("OpenTelemetry OTLP/HTTP endpoint for traces, e.g. `http://collector:4318` "
                              "(empty = off; needs the `otel` extra).", "")
    prediction_quality: bool = _doc("Confidence, entropy and drift signals for classifier models.", True)
    drift_window_rows: int = _doc("Recent predicted rows the drift gauges (PSI, input mean/std) compare "
                                  "with the optimizer's baseline.", 2048)
    status_interval_s: float = _doc("How often the status page's history samples the counters.", 2.0)
    status_history_s: float = _doc("How far back the status page's charts reach.", 600.0)


@dataclass(frozen=True)
class JobsSettings:
    data_dir: Path | None = _doc("Folder batch jobs submitted over the API (`POST /v2/jobs`) read from and write "
                                 "to; their paths are relative to it and may not leave it (symlinks included). "
                                 "Unset: the jobs API is off (the CLI `appliance batch run` needs no setting).",
                                 None)
    max_running: int = _doc("Jobs the server runs at once; further submissions wait their turn.", 1)
    chunk_rows: int = _doc("Rows per committed chunk (one Parquet part + a journal update): what a resumed "
                           "job may have to redo, and what bounds a job's memory.", 8192)
    in_flight: int = _doc("Requests of `batch_size` rows a job keeps in the service at once.", 2)
    headroom: float = _doc("A job's request is admitted only while fewer than this share of the model version's "
                           "(adaptive) in-flight limit are in flight and no live request waits; otherwise it "
                           "waits (never refused), so live traffic keeps the slots it needs.", 0.5)
    live_pace: float = _doc("While live requests are being answered, a job pauses this many times as long as "
                            "each of its requests took before sending the next, and as its last commit took "
                            "before the next commit (3: at most a quarter of its flat-out rate); alone, it runs "
                            "flat out. 0: never pause.", 3.0)


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)

    def replace(self, group: str, **changes: Any) -> Settings:
        """A copy with some keys of one group changed (used by CLI flags and tests)."""
        return dataclasses.replace(self, **{group: dataclasses.replace(getattr(self, group), **changes)})


def _group_types() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a TOML or environment value to the declared type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value == ""):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list")
        return [_coerce(v, args[0], key) for v in value]
    try:
        return _scalar(value, hint)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _scalar(value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError(value)
    if hint is int and isinstance(value, bool | float):
        raise ValueError(value)
    if hint is Path:
        return Path(value)
    return hint(value)


def _build_group(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{name}] has unknown key(s): {', '.join(sorted(unknown))}")
    kwargs = {k: _coerce(v, hints[k], f"{name}.{k}") for k, v in values.items()}
    instance = cls(**kwargs)
    _validate(name, instance)
    return instance


def _validate(name: str, group: Any) -> None:
    for f in dataclasses.fields(group):
        value = getattr(group, f.name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{name}.{f.name}: must not be negative")
    if name == "server" and group.workers != "auto" and not (group.workers.isdigit() and int(group.workers) >= 1):
        raise ConfigError(f"server.workers: {group.workers!r} is neither 'auto' nor a positive number")
    if name in ("server", "grpc") and not 0 <= group.port <= 65535:
        raise ConfigError(f"{name}.port: must be between 0 and 65535")


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None,
                  base_dir: Path | None = None) -> Settings:
    """Read ``path`` (optional) and ``APPLIANCE_*`` overrides into one validated Settings.

    Relative paths in the file are resolved against the file's folder, so a config written by
    install.sh keeps working whatever the working directory is.
    """
    env = os.environ if env is None else env
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        base_dir = base_dir or path.parent
    groups = _group_types()
    unknown = set(raw) - set(groups)
    if unknown:
        raise ConfigError(f"unknown configuration section(s): {', '.join(sorted(unknown))}")
    for name in groups:
        prefix = f"APPLIANCE_{name.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                raw.setdefault(name, {})[key[len(prefix):].lower()] = value
    built = {}
    for name, cls in groups.items():
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{name}] must be a table")
        built[name] = _build_group(name, cls, section)
    settings = Settings(**built)
    return _resolve_paths(settings, base_dir) if base_dir else settings


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    out = settings
    for group_field in dataclasses.fields(settings):
        group = getattr(settings, group_field.name)
        changes = {
            f.name: base / getattr(group, f.name)
            for f in dataclasses.fields(group)
            if isinstance(getattr(group, f.name), Path) and not getattr(group, f.name).is_absolute()
        }
        if changes:
            out = out.replace(group_field.name, **changes)
    return out


def settings_table() -> str:
    """Markdown table of every key, its default and its documentation."""
    lines = ["| key | default | env | meaning |", "|---|---|---|---|"]
    for group_field in dataclasses.fields(Settings):
        defaults = _group_types()[group_field.name]()
        for f in dataclasses.fields(defaults):
            default = getattr(defaults, f.name)
            shown = "—" if default is None else f"`{default}`"
            env = f"`APPLIANCE_{group_field.name.upper()}_{f.name.upper()}`"
            lines.append(f"| `{group_field.name}.{f.name}` | {shown} | {env} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"
