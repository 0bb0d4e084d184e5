"""Structured logs: one JSON object per line on stderr (journald keeps it as the message).

Fields come from ``extra={"fields": {...}}``; payloads and secrets are never passed in.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from typing import BinaryIO

import orjson

from appliance.system.utctime import utc_second

#: Request lines wait at most this long in memory before one write() carries them all.
FLUSH_INTERVAL_S = 0.05
_FLUSH_BYTES = 64 * 1024


def _timestamp(created: float) -> str:
    return f"{utc_second(int(created))}.{int(created * 1000) % 1000:03d}Z"


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
    ~50 µs a request on the hot path. Lines are buffered and written together by the event loop
    every ``FLUSH_INTERVAL_S`` (or at 64 KiB): a write() per request is a syscall that releases
    the GIL, and on a busy one-core server the loop then waits for a worker thread to give it
    back. Other log lines, shutdown and exit flush the buffer first, so order is kept. Falls back
    to ``logging`` when the process was not set up by :func:`configure_logging` (tests,
    embedding), so the line is never lost.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, object]) -> None:
        if _fast_stream is None:
            self.logger.info("request", extra={"fields": fields})
            return
        doc = {"ts": _timestamp(time.time()), "level": "info", "logger": self.logger.name, "msg": "request",
               **fields}
        _buffer.add(orjson.dumps(doc, default=str) + b"\n")


class _LineBuffer:
    """Lines for ``_fast_stream``, flushed by a timer on the running event loop."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line)
        if self.size >= _FLUSH_BYTES:
            self.flush()
        elif self.timer is None:
            try:
                self.timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)
            except RuntimeError:  # no loop (a script): write at once
                self.flush()

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lines or _fast_stream is None:
            return
        data = b"".join(self.lines)
        self.lines.clear()
        self.size = 0
        try:
            _fast_stream.write(data)
            _fast_stream.flush()
        except (OSError, ValueError):  # stderr closed (a detached process at exit): nothing to do
            pass


_fast_stream: BinaryIO | None = None
_buffer = _LineBuffer()


def flush_request_lines() -> None:
    """Write buffered request lines now (before other lines, at shutdown, at exit)."""
    _buffer.flush()


class _OrderedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes pending request lines before its own, so the log stays in time order.

    Only on the main thread (the event loop's, which alone fills the buffer); a line from a
    worker thread may land before request lines at most ``FLUSH_INTERVAL_S`` older than it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if _buffer.lines and threading.current_thread() is threading.main_thread():
            _buffer.flush()
        super().emit(record)


def configure_logging(level: str) -> None:
    global _fast_stream
    _fast_stream = sys.stderr.buffer
    atexit.register(flush_request_lines)
    handler = _OrderedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
