"""UTC ISO 8601 timestamps for log lines and audit records, formatted once per second.

``strftime`` costs microseconds and both the request log and the audit writer stamp every
request; the ``YYYY-MM-DDTHH:MM:SS`` part only changes once a second, so it is cached.
"""

from __future__ import annotations

import time

# (epoch second, its text), replaced as one tuple: the event loop and the audit writer thread
# both call utc_second(), and a pair updated slot by slot could be read half-written.
_cached: tuple[int, str] = (-1, "")


def utc_second(epoch_seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) of ``epoch_seconds``."""
    global _cached
    second, text = _cached
    if second != epoch_seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))
        _cached = (epoch_seconds, text)
    return text
