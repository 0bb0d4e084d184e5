"""Encrypted, tamper-evident audit log (SQLite, AES-256-GCM, hash chain, signed checkpoints).

::

    AuditLog.append(record)        event loop: enqueue (+ await the commit in strict mode)
        └─ writer.Writer thread    prepare + seal (sealing) → group commit (store) → sign (checkpoints)
    verify / export / retention    offline readers of the same files, driven by ``cli``
    keys                           keyring and signing key: formats, lookup order, init, rotation

Files: ``<state_dir>/audit.db`` (+ ``-wal``), ``audit.checkpoints.jsonl`` beside it (signed heads;
copy it off the host: ``appliance audit checkpoints``), ``<state_dir>/keys/audit.key`` and
``audit-signing.key`` (or systemd credentials of those names).

What it guarantees: no sealed field (who, from where, request id, input/output hashes, prediction
summary, detail, payload) is stored in clear; a changed, deleted, swapped or re-sealed row, a
dropped tail covered by a checkpoint and a forged checkpoint are all reported by ``verify``. What it
cannot: rows newer than the last checkpoint can be dropped unnoticed (bounded by
``checkpoint_every`` / ``checkpoint_interval_s``); someone holding both the signing key and the
database can rewrite history (keep a copy of the checkpoints elsewhere); strict mode's fsync proves
durability against a crash of the process, not against a disk that lies about flushing.
"""

from appliance.audit.log import AuditLog, NullAuditLog, audit_paths, open_audit_log
from appliance.audit.model import AuditError, AuditHealth, AuditKeyError, AuditRecord, AuditStats
from appliance.audit.remote import RemoteAuditLog

#: What the server's parts append to: the log in this process, the writer process's (one worker
#: of several), or nothing (audit off). All three have the same methods.
AuditSink = AuditLog | RemoteAuditLog | NullAuditLog

__all__ = ["AuditError", "AuditHealth", "AuditKeyError", "AuditLog", "AuditRecord", "AuditSink", "AuditStats",
           "NullAuditLog", "RemoteAuditLog", "audit_paths", "open_audit_log"]
