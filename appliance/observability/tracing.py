"""W3C Trace Context (``traceparent``): accept, validate, start a child span, echo it back.

Every request gets a trace id: the caller's when its ``traceparent`` is valid, a fresh one
otherwise. The server's span id is always new; the response carries ``traceparent`` with it so a
client can find the server's span. Spans are exported only when OTLP is configured
(:mod:`appliance.observability.otel`); without it this module costs one regex match and two
random numbers per request (~2 µs, bench/observability_overhead.py).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_TRACESTATE = 512


@dataclass(slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    parent_id: str = ""  # the caller's span, "" when the trace starts here
    flags: str = "00"
    tracestate: str = ""

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid header; None for anything invalid.

    Per the spec: lower-case hex only, version ``ff`` is invalid, version ``00`` has exactly four
    fields (later versions may append fields), all-zero trace or parent ids are invalid.
    """
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def new_span_id() -> str:
    # random, not secrets: ids must be unique and unguessable enough to not collide, not secret
    # (W3C asks for randomness); getrandbits costs a fraction of an os.urandom syscall.
    return f"{random.getrandbits(64) or 1:016x}"


def new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


def begin(traceparent: str | None, tracestate: str | None = None, *, sampled: bool = False) -> TraceContext:
    """The server span of one request: a child of the caller's, or the root of a new trace."""
    parsed = parse_traceparent(traceparent) if traceparent else None
    if parsed is None:
        return TraceContext(new_trace_id(), new_span_id(), flags="01" if sampled else "00")
    trace_id, parent_id, flags = parsed
    state = tracestate if tracestate and len(tracestate) <= _MAX_TRACESTATE and tracestate.isprintable() else ""
    return TraceContext(trace_id, new_span_id(), parent_id, flags, state)
