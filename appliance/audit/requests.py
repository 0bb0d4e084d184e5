"""Bridge from the data plane to the audit log: one record per answered inference request.

Only digests and a small summary leave the request (the log seals them); the inputs and
outputs themselves are kept only for models that opt in with ``[audit] capture_payloads``.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.audit import AuditSink
from appliance.audit.model import AuditError, AuditRecord
from appliance.dataplane.service import InferOutcome
from appliance.dataplane.tensors import tensor_digest
from appliance.errors import ServiceUnavailable

#: Digests of inputs larger than this are computed in a thread, off the event loop.
_OFFLOAD_BYTES = 256 * 1024
_SUMMARY_ROWS = 16
_REJECTIONS = frozenset({429, 503, 504})
_AUTH_FAILURES = frozenset({401, 403})
_TALLY_SECONDS = 1.0


class InferenceAuditor:
    """The service's ``AuditSink``: strict mode awaits the commit before the response is sent."""

    def __init__(self, log: AuditSink, active_requests: Callable[[], int] | None = None) -> None:
        self.log = log
        # How many requests the service is serving: when every one of them waits on the log, no
        # record can arrive before they are answered, so the writer need not hold the batch open.
        self._active_requests = active_requests
        self._overloaded: Counter[tuple[str, str]] = Counter()
        self._tally_since = 0.0
        self._flush: asyncio.TimerHandle | None = None

    async def record_inference(self, outcome: InferOutcome) -> None:
        if outcome.status == 429:
            self._count_overload(outcome)
            return
        if outcome.status in _AUTH_FAILURES:
            ctx = outcome.context
            self.log.append_nowait(AuditRecord(
                action="auth_failure", request_id=ctx.request_id, principal=ctx.principal, client=ctx.client,
                model=ctx.model, status=outcome.status, detail=f"{ctx.operation}: {outcome.error}"))
            return
        request, outputs = outcome.request, outcome.outputs
        inputs = {t.name: t.data for t in request.inputs} if request is not None else {}
        capture = bool(outcome.version and outcome.version.config.capture_payloads and outputs)
        size = sum(a.nbytes for a in inputs.values())
        ctx = outcome.context
        if size > _OFFLOAD_BYTES or capture:
            digests = await asyncio.to_thread(_digests, inputs, outputs, capture, ctx.input_sha256)
        else:
            digests = _digests(inputs, outputs, capture, ctx.input_sha256)
        compiled = outcome.version.compiled if outcome.version else None
        record = AuditRecord(
            action="reject" if outcome.status in _REJECTIONS else "infer",
            request_id=ctx.request_id, principal=ctx.principal, client=ctx.client, model=ctx.model,
            version=ctx.version, status=outcome.status, latency_ms=(time.monotonic() - ctx.started) * 1000,
            cache_hit=ctx.cache_hit, device=compiled.device if compiled else "",
            input_sha256=digests[0], output_sha256=digests[1], summary=summarize(outputs),
            payload=digests[2], detail=outcome.error,
            manifest_sha256=outcome.version.manifest_sha256 if outcome.version else "", route=ctx.route,
        )
        if outcome.status != 200:
            self.log.append_nowait(record)  # a refusal must not wait on the disk
            return
        active = self._active_requests
        try:
            await self.log.append(record, flush=active is not None and self.log.waiting + 1 >= active())
        except AuditError as exc:
            raise ServiceUnavailable(f"audit log unavailable: {exc}") from None

    def _count_overload(self, outcome: InferOutcome) -> None:
        """Load shedding is tallied into one record per model and second: under a flood, one
        sealed record per refusal would make the audit log the amplifier of the overload."""
        if self._flush is None:
            self._tally_since = time.monotonic()
            self._flush = asyncio.get_running_loop().call_later(_TALLY_SECONDS, self.flush_overloads)
        self._overloaded[(outcome.context.model, outcome.context.version)] += 1

    def flush_overloads(self) -> None:
        """Write the pending tallies (also called at shutdown, before the log closes)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        elapsed = time.monotonic() - self._tally_since
        for (model, version), count in self._overloaded.items():
            self.log.append_nowait(AuditRecord(
                "reject", model=model, version=version, status=429,
                summary={"refused": count, "seconds": round(elapsed, 3)},
                detail=f"{count} request(s) refused: model at capacity (load shedding)"))
        self._overloaded.clear()


def _digests(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None,
             capture: bool, inputs_sha256: str = "") -> tuple[str, str, bytes | None]:
    """(input SHA-256, output SHA-256, captured payload); the input digest is reused when the
    service already computed it for the cache key."""
    payload = None
    if capture and outputs is not None:
        buffer = io.BytesIO()
        arrays = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in outputs.items()}
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        payload = buffer.getvalue()
    input_digest = inputs_sha256 or (tensor_digest(inputs) if inputs else "")
    return (input_digest, tensor_digest(outputs) if outputs else "", payload)


def summarize(outputs: dict[str, np.ndarray] | None) -> dict[str, Any] | None:
    """Top class and confidence per row for a classifier-shaped output (first 2-D float output)."""
    if not outputs:
        return None
    for name, array in outputs.items():
        if array.ndim == 2 and array.dtype.kind == "f" and array.shape[1] > 1:
            # At most 16 short rows: one tolist() and plain Python beat four numpy calls here
            # (this runs on the event loop for every answered request), and one row, the usual
            # case, needs no list comprehensions (each is a function call in Python 3.11).
            if array.shape[0] == 1:
                row = array[0].tolist()
                best = row.index(max(row))
                return {"output": name, "rows": 1, "top_class": [best], "confidence": [round(row[best], 4)]}
            rows = array[:_SUMMARY_ROWS].tolist()
            top = [row.index(max(row)) for row in rows]
            return {"output": name, "rows": int(array.shape[0]), "top_class": top,
                    "confidence": [round(row[i], 4) for row, i in zip(rows, top, strict=True)]}
    first = next(iter(outputs.items()))
    return {"output": first[0], "shape": list(first[1].shape)}
