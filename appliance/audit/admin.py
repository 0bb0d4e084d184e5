"""Audit records for administrative commands run from the CLI (keys, model encryption...).

The CLI appends to the same log as the running server (each transaction reads the chain head
under ``BEGIN IMMEDIATE``). Where audit is disabled or its keys are not reachable from this
shell, the action still happens and the operator is told it was not recorded.
"""

from __future__ import annotations

import getpass
import sys

from appliance.audit.log import AuditLog
from appliance.audit.model import AuditError, AuditRecord
from appliance.config import Settings


def record_admin_action(settings: Settings, action: str, detail: str, *, model: str = "",
                        version: str = "") -> bool:
    """Append one record for an administrative action; True when it was committed."""
    if not settings.audit.enabled:
        return False
    try:
        log = AuditLog.open(settings)
    except AuditError as exc:
        print(f"appliance: warning: {action} not recorded in the audit log: {exc}", file=sys.stderr)
        return False
    try:
        log.append_nowait(AuditRecord(action, principal=f"cli:{getpass.getuser()}", model=model,
                                      version=version, status=200, detail=detail))
    finally:
        log.close()
    return True
