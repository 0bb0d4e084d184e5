"""The data plane: one service that every front end (REST, gRPC, batch jobs) calls.

The whole request path reads top to bottom in :meth:`InferenceService.infer`:
draining? → resolve the version (once) → room in its admission? (429 before the body is read)
→ decode → validate → cache → admission slot → batcher/runtime → cache fill → audit → observers
→ metrics. A front end only authenticates, decodes and encodes; whatever goes wrong reaches
metrics, the audit log and the refusal pacing through one door, :meth:`InferenceService.refuse`.
Nothing here imports a wire protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from appliance.config import Settings
from appliance.dataplane.admission import RefusalPacer
from appliance.dataplane.cache import PredictionCache, cache_key
from appliance.dataplane.context import RequestContext
from appliance.dataplane.lanes import Lane, build_lane
from appliance.dataplane.tensors import InferRequest, InferResponse, tensor_digest
from appliance.errors import ApplianceError, Overloaded, ServiceUnavailable
from appliance.metrics import Metrics
from appliance.repository import ModelVersion, Repository

log = logging.getLogger("appliance.service")

#: The request, or how to read and decode it once admission has room (REST reads the body then).
RequestSource = InferRequest | Callable[[], Awaitable[InferRequest]]


@dataclass(slots=True)
class InferOutcome:
    """What the audit log and the observers learn about one finished or refused request."""

    context: RequestContext
    version: ModelVersion | None
    status: int
    request: InferRequest | None
    outputs: dict[str, np.ndarray] | None
    error: str = ""


class AuditSink(Protocol):
    async def record_inference(self, outcome: InferOutcome) -> None: ...


#: Told every successful outcome, synchronously, on the event loop: must be cheap and never block.
OutcomeObserver = Callable[[InferOutcome], None]


class InferenceService:
    def __init__(self, settings: Settings, repository: Repository, metrics: Metrics, cache: PredictionCache,
                 audit: AuditSink | None = None, observers: Iterable[OutcomeObserver] = ()) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.cache = cache
        self.audit = audit
        self.draining = False
        self.active = 0  # requests inside infer(): the audit log commits early once all of them wait on it
        self.refusals = RefusalPacer(settings.limits.refusals_per_s)
        self._lanes: dict[int, Lane] = {}
        self.observers = list(observers)

    # --- the request path --------------------------------------------------------------
    async def infer(self, ctx: RequestContext, model: str, version: str | None,
                    source: RequestSource) -> InferResponse:
        """Answer one request, or raise the typed error a front end maps to its status code."""
        self.active += 1
        try:
            return await self._infer(ctx, model, version, source)
        finally:
            self.active -= 1

    async def _infer(self, ctx: RequestContext, model: str, version: str | None,
                     source: RequestSource) -> InferResponse:
        if self.draining:
            raise ServiceUnavailable("server is shutting down", retry_after=5.0)
        target = self.repository.resolve(model, version)
        lane = self._lane(target)
        ctx.model, ctx.version = target.name, lane.version_label
        admission = lane.admission
        if not ctx.background:
            admission.check_room(ctx.body_bytes)  # a flood is refused before its body is read
        request = source if isinstance(source, InferRequest) else await source()
        inputs = lane.validate(request)
        wanted = lane.wanted_outputs(request)
        key = None
        if target.config.cache_enabled and ctx.use_cache:
            ctx.input_sha256 = tensor_digest(inputs)
            key = cache_key(target.name, lane.version_label, target.loaded_at, wanted, ctx.input_sha256)
            cached = self.cache.get(key)
            if cached is not None:
                lane.metrics.cache_hit.inc()
                ctx.cache_hit = True
                return await self._answer(lane, request, ctx, cached, wanted)
            lane.metrics.cache_miss.inc()
        queued = time.monotonic()
        if ctx.background:  # batch jobs: --- background work, see Admission.wait_headroom ---
            await admission.wait_headroom(self.settings.jobs.headroom)
        elif not admission.try_enter():
            await admission.wait_turn(request.nbytes, ctx.priority, ctx.deadline)
        started, in_flight = time.monotonic(), admission.in_flight
        try:
            lane.metrics.queue_wait.observe(started - queued)
            outputs, ctx.batch_size = await lane.batcher.run(inputs, ctx.deadline)
            lane.metrics.inference_seconds.observe(time.monotonic() - started)
            if key is not None:
                self.cache.put(key, outputs)
            return await self._answer(lane, request, ctx, outputs, wanted)
        finally:
            if ctx.background:
                ctx.pause_s = admission.leave_background(started, self.settings.jobs.live_pace)
            else:
                admission.leave(started, in_flight)  # the slot spans the audit commit: its wait is latency too

    async def _answer(self, lane: Lane, request: InferRequest, ctx: RequestContext,
                      outputs: dict[str, np.ndarray], wanted: tuple[str, ...]) -> InferResponse:
        selected = {name: outputs[name] for name in wanted}
        # Batch jobs: one audit record per job (its own), and kept out of the observers, whose
        # drift and confidence signals describe live traffic (a nightly batch is another population).
        if not ctx.background and (self.audit is not None or self.observers):
            outcome = InferOutcome(ctx, lane.target, 200, request, selected)
            if self.audit is not None:
                await self.audit.record_inference(outcome)
            self._notify(outcome)
        lane.metrics.ok.inc()
        lane.metrics.request_seconds.observe(time.monotonic() - ctx.started)
        return InferResponse(lane.target.name, lane.version_label, selected, id=request.id)

    # --- the one door for everything that went wrong -------------------------------------
    async def refuse(self, ctx: RequestContext, error: ApplianceError, status: int) -> None:
        """Count and audit a refused or failed request, whichever front end saw it; a 429 is then
        held for its turn past ``limits.refusals_per_s``, so clients retrying at once cannot take
        the CPU admitted requests need. ``status`` is the HTTP-equivalent code the audit log keeps."""
        self.metrics.record_error(ctx.model, ctx.version, ctx.protocol, status, error)
        if self.audit is not None and (ctx.model or status in (401, 403)):
            await self.audit.record_inference(InferOutcome(ctx, None, status, None, None, error.message))
        if isinstance(error, Overloaded):
            hold = self.refusals.delay(error.retry_after)
            if hold:
                await asyncio.sleep(hold)

    def _notify(self, outcome: InferOutcome) -> None:
        try:
            for observe in self.observers:
                observe(outcome)
        except Exception:  # an observer's bug must never fail a served request
            log.exception("outcome observer failed")

    # --- per-version state ---------------------------------------------------------------
    def _lane(self, target: ModelVersion) -> Lane:
        lane = self._lanes.get(id(target))
        if lane is None:
            lane = self._lanes[id(target)] = build_lane(target, self.settings, self.metrics)
        return lane

    def admission_stats(self) -> dict[str, dict[str, Any]]:
        """Per model (the newest lane of each): in flight, waiting, queued bytes, the limit in
        force, whether it is adaptive, and the estimated no-load latency."""
        stats: dict[str, dict[str, Any]] = {}
        for lane in sorted(self._lanes.values(), key=lambda lane: lane.target.version):
            stats[lane.target.name] = lane.admission.stats()
        return stats

    def busy(self) -> bool:
        return any(lane.admission.in_flight or lane.admission.waiting for lane in self._lanes.values())

    async def drain(self, grace_s: float) -> bool:
        """Refuse new work, let admitted work finish; True if everything finished in time."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.busy():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
