"""Value objects of the audit log: the record callers hand in, the writer's health, the errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AuditError(Exception):
    """The audit log cannot do what was asked (database, file or verification trouble)."""


class AuditKeyError(AuditError):
    """A key is missing, unreadable, malformed or not the one the log was written with.

    The message says which file was looked for and what to do, because the server refuses
    to start on it and an operator must be able to act on the message alone.
    """


@dataclass(slots=True)
class AuditRecord:
    """One event. The log adds sequence number, time, previous hash and key id.

    Not frozen: one is built per answered request on the event loop, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) costs twice as much. Treat it as a value.

    ``principal``, ``client``, ``request_id``, the input/output and manifest hashes, ``summary``,
    ``route``, ``detail`` and ``payload`` are sealed with AES-256-GCM; the remaining fields stay
    clear so operators can count and filter without the key (see ``appliance.audit.sealing``).
    ``manifest_sha256`` (the served version's manifest) and ``route`` (stable/canary/shadow) are
    optional: a record without them costs nothing for them.
    """

    action: str
    request_id: str = ""
    principal: str = ""
    client: str = ""
    model: str = ""
    version: str = ""
    status: int = 0
    latency_ms: float = 0.0
    cache_hit: bool = False
    device: str = ""
    input_sha256: str = ""
    output_sha256: str = ""
    summary: dict[str, Any] | None = None
    payload: bytes | None = None
    detail: str = ""
    manifest_sha256: str = ""
    route: str = ""


@dataclass(frozen=True, slots=True)
class AuditStats:
    """A snapshot of the writer, for /metrics and the health check."""

    records_written: int
    records_pending: int
    last_commit_monotonic: float | None
    writer_lag_seconds: float
    commits: int
    last_checkpoint_seq: int
    healthy: bool
    last_error: str | None
    #: Records lost with nobody waiting to be told (relaxed mode, refusals, lifecycle events).
    records_dropped: int = 0
    commit_failures: int = 0


@dataclass(frozen=True, slots=True)
class AuditHealth:
    """Whether the log can commit now, for readiness and the status page (no protocol in it).

    ``ready`` is False only when requests depend on the log and it cannot take them: strict mode
    and a failing writer (disk full, read-only file system, database locked or damaged). Relaxed
    mode keeps serving and counts what it drops.
    """

    ok: bool
    ready: bool
    reason: str = ""
