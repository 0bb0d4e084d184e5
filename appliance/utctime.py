"""UTC ISO 8601 timestamps for log lines and audit records, formatted once per second.

``strftime`` costs microseconds and both the request log and the audit writer stamp every
request; the ``YYYY-MM-DDTHH:MM:SS`` part only changes once a second, so it is cached.
"""

from __future__ import annotations

import time
from typing import Any

_second: list[Any] = [None, ""]  # (epoch second, its formatted text)


def utc_second(epoch_seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) of ``epoch_seconds``."""
    cached = _second
    if cached[0] != epoch_seconds:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))
        cached[0] = epoch_seconds
    return str(cached[1])
