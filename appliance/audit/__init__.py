"""Encrypted, tamper-evident audit log (SQLite, AES-256-GCM, hash chain, signed checkpoints).

::

    AuditLog.append(record)          event loop: enqueue (+ await the commit in strict mode)
        └─ writer.Writer thread      seal (sealing) → group commit (store) → checkpoint (checkpoints)
    verify / export / retention      offline readers of the same files, driven by ``cli``

Keys: ``keys`` (keyring file, signing key, resolution order, init and rotation).
"""

from appliance.audit.log import AuditLog, NullAuditLog, audit_paths, open_audit_log
from appliance.audit.model import AuditError, AuditKeyError, AuditRecord, AuditStats

__all__ = ["AuditError", "AuditKeyError", "AuditLog", "AuditRecord", "AuditStats", "NullAuditLog",
           "audit_paths", "open_audit_log"]
