"""Structured logs: one JSON object per line on stderr (journald keeps it as the message).

Fields come from ``extra={"fields": {...}}``; payloads and secrets are never passed in.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import BinaryIO

import orjson


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class RequestLog:
    """The per-request line, written straight to the JSON handler's stream.

    Same format as every other line, without the ``LogRecord``/handler machinery, which cost
    ~50 µs a request on the hot path. Falls back to ``logging`` when the process was not set up by
    :func:`configure_logging` (tests, embedding), so the line is never lost.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, object]) -> None:
        stream = _fast_stream
        if stream is None:
            self.logger.info("request", extra={"fields": fields})
            return
        now = time.time()
        doc = {"ts": _timestamp(now), "level": "info", "logger": self.logger.name, "msg": "request", **fields}
        stream.write(orjson.dumps(doc, default=str) + b"\n")
        stream.flush()


_fast_stream: BinaryIO | None = None


def configure_logging(level: str) -> None:
    global _fast_stream
    _fast_stream = sys.stderr.buffer
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
