"""The data plane: one service that every front end (REST, gRPC, batch jobs) calls.

The whole request path reads top to bottom in :meth:`InferenceService.infer`, ``_serve`` and
``_admitted``: draining? → route and resolve the version (once; a rollout may pick the candidate)
→ an admission slot (429 at once past the limit, before the body is read) → decode → validate →
cache → processing, batcher, runtime → cache fill → mirror to the version a rollout compares with
(shed first) → audit → observers → metrics. A front end only authenticates, decodes and encodes;
whatever goes wrong reaches metrics, the audit log and the refusal pacing through one door,
:meth:`InferenceService.refuse`.
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
from appliance.dataplane.mirror import Mirror
from appliance.dataplane.tensors import InferRequest, InferResponse, tensor_digest
from appliance.errors import ApplianceError, InferenceFailed, Overloaded, ServiceUnavailable
from appliance.lifecycle.agreement import compare
from appliance.lifecycle.router import Decision, RolloutStats, Router
from appliance.metrics import Metrics
from appliance.repository import ModelVersion, Repository, close_version

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
                 audit: AuditSink | None = None, observers: Iterable[OutcomeObserver] = (),
                 router: Router | None = None) -> None:
        self.settings = settings
        self.router = router
        self.repository = repository
        self.metrics = metrics
        self.cache = cache
        self.audit = audit
        self.draining = False
        self.active = 0  # requests inside infer(): the audit log commits early once all of them wait on it
        self.refusals = RefusalPacer(settings.limits.refusals_per_s)
        self._lanes: dict[int, Lane] = {}
        #: By (answering version, mirrored version number, is it the candidate): the rollout's tallies
        #: the gatherer reports into, and the gatherer. Dropped when either version is retired.
        self._mirrors: dict[tuple[int, int, bool], tuple[RolloutStats, Mirror]] = {}
        self.observers = list(observers)

    # --- the request path --------------------------------------------------------------
    async def infer(self, ctx: RequestContext, model: str, version: str | None,
                    source: RequestSource) -> InferResponse:
        """Answer one request, or raise the typed error a front end maps to its status code."""
        if self.draining:
            raise ServiceUnavailable("server is shutting down", retry_after=5.0)
        decision = self.router.decide(model, ctx.route_keys) if version is None and self.router else None
        lane = self._lane(self._resolve(model, version, decision))
        if decision is not None and lane.target.version != decision.version:
            decision = None  # the rollout's pick is not loaded: the default version answers
        # The route the audit record keeps: a rollout's pick, the default version, or the one named.
        ctx.route = decision.route if decision is not None else "explicit" if version else "stable"
        lane.users += 1  # the version is not closed while a request that resolved it is unanswered
        self.active += 1
        answered: bool | None = None  # False: the version failed; None: a refusal or a client's mistake
        try:
            response = await self._serve(ctx, lane, source, decision)
            answered = True
            return response
        except InferenceFailed:
            answered = False
            raise
        finally:
            self.active -= 1
            lane.users -= 1
            if decision is not None and answered is not None and self.router is not None:
                self.router.observe(model, decision, time.monotonic() - ctx.started, not answered)

    async def _serve(self, ctx: RequestContext, lane: Lane, source: RequestSource,
                     decision: Decision | None) -> InferResponse:
        """Admission first: the slot is taken before the body is read and held until the answer,
        so the limit bounds all the work a request costs the event loop, not only its inference."""
        ctx.model, ctx.version = lane.target.name, lane.version_label
        admission = lane.admission
        queued = time.monotonic()
        if ctx.background:  # batch jobs: only into the headroom live requests leave (Admission.wait_headroom)
            await admission.wait_headroom(self.settings.jobs.headroom)
        elif not admission.try_enter():  # refused at once past the limit and the queue (adaptive: no queue)
            await admission.wait_turn(ctx.body_bytes, ctx.priority, ctx.deadline)
        started, in_flight = time.monotonic(), admission.in_flight
        lane.metrics.queue_wait.observe(started - queued)
        try:
            return await self._admitted(ctx, lane, source, decision)
        finally:
            if ctx.background:  # a job's latency is not what live requests see: the limit does not learn it
                ctx.pause_s = admission.leave_background(started, self.settings.jobs.live_pace)
            else:
                admission.leave(started, in_flight)  # the slot spans the audit commit: its wait is latency too

    async def _admitted(self, ctx: RequestContext, lane: Lane, source: RequestSource,
                        decision: Decision | None) -> InferResponse:
        target = lane.target
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
                if lane.processing is not None:
                    await lane.count_tokens(inputs, ctx)
                return await self._answer(lane, request, ctx, cached, wanted, decision, inputs)
            lane.metrics.cache_miss.inc()
        started = time.monotonic()
        outputs, ctx.batch_size = await lane.infer(inputs, ctx.deadline, ctx)  # + processing
        lane.metrics.inference_seconds.observe(time.monotonic() - started)
        if key is not None:
            self.cache.put(key, outputs, owner=target)
        return await self._answer(lane, request, ctx, outputs, wanted, decision, inputs)

    async def _answer(self, lane: Lane, request: InferRequest, ctx: RequestContext, outputs: dict[str, np.ndarray],
                      wanted: tuple[str, ...], decision: Decision | None,
                      inputs: dict[str, np.ndarray]) -> InferResponse:
        if decision is not None:
            self._mirror(lane, decision, inputs, outputs, ctx)
        selected = lane.select(outputs, wanted, request)  # classification: top-K labels
        # Batch jobs: one audit record per job (its own), and kept out of the observers, whose
        # drift and confidence signals describe live traffic (a nightly batch is another population).
        if not ctx.background and (self.audit is not None or self.observers):
            outcome = InferOutcome(ctx, lane.target, 200, request, selected)
            if self.audit is not None:
                await self.audit.record_inference(outcome)
            self._notify(outcome)
        lane.metrics.ok[ctx.protocol].inc()
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

    # --- rollouts: which version answers, which one is compared ---------------------------
    def _resolve(self, model: str, version: str | None, decision: Decision | None) -> ModelVersion:
        """The version that answers; a rollout's pick unless that version is not loaded (then the
        default, so a rollout can never make a model unavailable)."""
        if decision is not None:
            try:
                return self.repository.resolve(model, str(decision.version))
            except ApplianceError:
                pass
        return self.repository.resolve(model, version)

    def _mirror(self, lane: Lane, decision: Decision, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray], ctx: RequestContext) -> None:
        """Hand the same inputs to the version the rollout compares with, only with room to spare:
        mirrored work is the first to be shed under load. "Room" is fewer requests in the server
        than twice the runtime's slots (beyond that they queue somewhere, whatever the admission
        limit allows); it is checked before anything else, so a shed mirror costs next to nothing.
        Mirrors are gathered and run in batches (``dataplane.mirror``), one gatherer per answering
        version, compared version and rollout, so a window never mixes two rollouts' answers."""
        router, compared, stats = self.router, decision.compare, decision.stats
        if router is None or compared is None or stats is None:
            return
        if self.active > 2 * max(1, lane.batcher.slots):
            router.shed(stats)
            return
        model, candidate = ctx.model, ctx.route != "canary"  # shadow mirrors the candidate, canary the stable
        key = (id(lane.target), compared, candidate)
        held = self._mirrors.get(key)
        if held is None or held[0] is not stats or not held[1].lane.target.ready:
            try:
                other = self._lane(self.repository.resolve(model, str(compared)))
            except ApplianceError:
                return  # the compared version is not loaded (any more): nothing to compare with
            held = self._mirrors[key] = (stats, Mirror(
                other, lambda primary, answers, requests: self._compared(model, stats, candidate, primary, answers,
                                                                         requests),
                lambda requests: router.shed(stats, requests)))
        rows = next(iter(inputs.values())).shape[0] if lane.target.config.max_batch_size > 0 and inputs else 1
        if not held[1].offer(inputs, outputs, rows):
            router.shed(stats)

    def _compared(self, model: str, stats: RolloutStats, mirror_is_candidate: bool, primary: dict[str, np.ndarray],
                  other: dict[str, np.ndarray] | None, requests: int) -> None:
        router = self.router
        if router is None:
            return
        if mirror_is_candidate:  # shadow mode: the mirrored answers are the candidate's samples
            router.observe_mirrored(model, stats, requests, failed=other is None)
        if other is not None:
            router.compared(model, stats, compare(primary, other), requests)

    # --- per-version state ---------------------------------------------------------------
    def _lane(self, target: ModelVersion) -> Lane:
        lane = self._lanes.get(id(target))
        if lane is None:
            lane = self._lanes[id(target)] = build_lane(target, self.settings, self.metrics)
        return lane

    async def retire(self, versions: Iterable[ModelVersion], grace_s: float) -> None:
        """Versions the repository no longer serves: wait (at most ``grace_s``) for the requests that
        already resolved them, then drop their lanes and cached answers and close their runtimes."""
        deadline = time.monotonic() + grace_s
        lanes = [lane for v in versions if (lane := self._lanes.get(id(v))) is not None]
        # Polling, not an Event: one per lane would cost every request a set and a clear.
        while any(lane.users for lane in lanes) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for version in versions:
            self._lanes.pop(id(version), None)
            for key in [k for k, (_, m) in self._mirrors.items() if k[0] == id(version) or m.lane.target is version]:
                del self._mirrors[key]
            self.cache.drop(version)
        await asyncio.to_thread(_close_all, list(versions))

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


def _close_all(versions: list[ModelVersion]) -> None:
    for version in versions:
        close_version(version)
