"""The data plane: one service the HTTP layer (and later gRPC) calls.

The whole request path is readable in :meth:`InferenceService.infer`:
resolve → validate → cache → admission → batcher/runtime → cache fill → audit → metrics.
Authentication happens before (middleware), encoding after (codec). Nothing here imports the
web framework.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from appliance.config import Settings
from appliance.dataplane.admission import Admission, RefusalPacer
from appliance.dataplane.batching import Batcher
from appliance.dataplane.cache import PredictionCache, cache_key
from appliance.dataplane.context import RequestContext
from appliance.dataplane.tensors import TO_NUMPY, InferRequest, InferResponse, tensor_digest
from appliance.errors import ApplianceError, InvalidInput, LimitExceeded, ServiceUnavailable
from appliance.metrics import Metrics, VersionMetrics
from appliance.modelconfig import TensorSpec
from appliance.repository import ModelVersion, Repository

log = logging.getLogger("appliance.dataplane.service")


@dataclass(slots=True)
class InferOutcome:
    """What the audit log and the logs learn about one finished inference."""

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


@dataclass(slots=True)
class _InputPlan:
    dtype: np.dtype
    datatype: str
    dims: tuple[int, ...]  # without the batch dimension when batched


@dataclass
class _VersionRuntime:
    """Per-version serving state owned by the service (never attached to the model object)."""

    batcher: Batcher
    plan: dict[str, _InputPlan]
    output_names: tuple[str, ...]
    metrics: VersionMetrics
    version_label: str


class InferenceService:
    def __init__(self, settings: Settings, repository: Repository, metrics: Metrics,
                 cache: PredictionCache, audit: AuditSink | None = None) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.cache = cache
        self.audit = audit
        self.draining = False
        self.active = 0  # requests inside infer(): the audit log commits early once all of them wait on it
        self.refusals = RefusalPacer(settings.limits.refusals_per_s)
        self._runtimes: dict[int, _VersionRuntime] = {}
        self._admission: dict[str, Admission] = {}
        self._observers: list[OutcomeObserver] = []

    def add_observer(self, observer: OutcomeObserver) -> None:
        """Register a listener for successful outcomes (prediction-quality signals, ...)."""
        self._observers.append(observer)

    # --- the request path --------------------------------------------------------------
    async def infer(self, model: str, version: str | None, request: InferRequest,
                    ctx: RequestContext) -> InferResponse:
        self._refuse_if_draining()
        self.active += 1
        try:
            return await self._infer(model, version, request, ctx)
        finally:
            self.active -= 1

    async def _infer(self, model: str, version: str | None, request: InferRequest,
                     ctx: RequestContext) -> InferResponse:
        target = self.repository.resolve(model, version)
        runtime = self._runtime(target)
        ctx.model, ctx.version = target.name, runtime.version_label
        inputs = self._validate(target, runtime, request)
        wanted = self._wanted_outputs(runtime, request)
        key = None
        if target.config.cache_enabled and ctx.use_cache:
            ctx.input_sha256 = tensor_digest(inputs)
            key = cache_key(target.name, runtime.version_label, target.loaded_at, wanted, ctx.input_sha256)
            cached = self.cache.get(key)
            if cached is not None:
                runtime.metrics.cache_hit.inc()
                ctx.cache_hit = True
                return await self._finish(target, runtime, request, ctx, cached, wanted)
            runtime.metrics.cache_miss.inc()
        admission = self._admission_for(target)
        queued = time.monotonic()
        if not admission.try_enter():
            await admission.wait_turn(request.nbytes, ctx.priority, ctx.deadline)
        started = time.monotonic()
        try:
            runtime.metrics.queue_wait.observe(started - queued)
            outputs, ctx.batch_size = await runtime.batcher.run(inputs, ctx.deadline)
        finally:
            admission.leave(started)
        runtime.metrics.inference_seconds.observe(time.monotonic() - started)
        if key is not None:
            self.cache.put(key, outputs)
        return await self._finish(target, runtime, request, ctx, outputs, wanted)

    async def _finish(self, target: ModelVersion, runtime: _VersionRuntime, request: InferRequest,
                      ctx: RequestContext, outputs: dict[str, np.ndarray],
                      wanted: tuple[str, ...]) -> InferResponse:
        selected = {name: outputs[name] for name in wanted}
        if self.audit is not None or self._observers:
            outcome = InferOutcome(ctx, target, 200, request, selected)
            if self.audit is not None:
                await self.audit.record_inference(outcome)
            self._notify(outcome)
        runtime.metrics.ok.inc()
        runtime.metrics.request_seconds.observe(time.monotonic() - ctx.started)
        return InferResponse(target.name, runtime.version_label, selected, id=request.id)

    async def record_failure(self, ctx: RequestContext, status: int, error: ApplianceError) -> None:
        """Audit and count a refused or failed request (called by the HTTP error mapping)."""
        self.metrics.record_error(ctx.model, ctx.version, ctx.protocol, status, error)
        if self.audit is not None and ctx.model:
            await self.audit.record_inference(InferOutcome(ctx, None, status, None, None, error.message))

    def _notify(self, outcome: InferOutcome) -> None:
        try:
            for observe in self._observers:
                observe(outcome)
        except Exception:  # an observer's bug must never fail a served request
            log.exception("outcome observer failed")

    # --- validation ----------------------------------------------------------------------
    def _validate(self, target: ModelVersion, runtime: _VersionRuntime,
                  request: InferRequest) -> dict[str, np.ndarray]:
        plan = runtime.plan
        inputs: dict[str, np.ndarray] = {}
        batch_rows = None
        max_batch = target.config.max_batch_size
        for tensor in request.inputs:
            spec = plan.get(tensor.name)
            if spec is None:
                raise InvalidInput(f"model '{target.name}' has no input '{tensor.name}' "
                                   f"(inputs: {', '.join(plan)})")
            if tensor.datatype != spec.datatype:
                raise InvalidInput(f"input '{tensor.name}': datatype {tensor.datatype}, "
                                   f"model expects {spec.datatype}")
            rows = _check_shape(tensor.name, tensor.shape, spec.dims, max_batch)
            if batch_rows is not None and rows != batch_rows:
                raise InvalidInput("all inputs must have the same batch size")
            batch_rows = rows
            inputs[tensor.name] = tensor.data
        missing = [name for name in plan if name not in inputs]
        if missing:
            raise InvalidInput(f"missing input(s): {', '.join(missing)}")
        return inputs

    def _wanted_outputs(self, runtime: _VersionRuntime, request: InferRequest) -> tuple[str, ...]:
        if not request.outputs:
            return runtime.output_names
        names = tuple(o.name for o in request.outputs)
        unknown = [n for n in names if n not in runtime.output_names]
        if unknown:
            raise InvalidInput(f"unknown output(s): {', '.join(unknown)} (outputs: {', '.join(runtime.output_names)})")
        return names

    # --- per-version and per-model state -------------------------------------------------
    def _runtime(self, target: ModelVersion) -> _VersionRuntime:
        runtime = self._runtimes.get(id(target))
        if runtime is None:
            runtime = self._runtimes[id(target)] = self._build_runtime(target)
        return runtime

    def _build_runtime(self, target: ModelVersion) -> _VersionRuntime:
        compiled = target.compiled
        assert compiled is not None  # resolve() returns ready versions only
        config = target.config
        batched = config.max_batch_size > 0 and self.settings.batching.enabled
        label = str(target.version)
        metrics = self.metrics.for_version(target.name, label)
        delay_us = config.max_queue_delay_us
        if delay_us is None:
            delay_us = self.settings.batching.max_queue_delay_us
        batcher = Batcher(compiled, max_batch_size=config.max_batch_size if batched else 0,
                          max_queue_delay_s=delay_us / 1e6, preferred_batch_size=config.preferred_batch_size,
                          observer=metrics.observe_batch)
        return _VersionRuntime(batcher, input_plan(target), tuple(p.name for p in compiled.outputs),
                               metrics, label)

    def _admission_for(self, target: ModelVersion) -> Admission:
        admission = self._admission.get(target.name)
        if admission is None:
            limits, config = self.settings.limits, target.config
            admission = self._admission[target.name] = Admission(
                target.name,
                max_concurrency=config.max_concurrency or limits.max_concurrency,
                max_queue=config.max_queue if config.max_queue is not None else limits.max_queue,
                max_queued_bytes=limits.max_queued_bytes,
            )
        return admission

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise ServiceUnavailable("server is shutting down", retry_after=5.0)

    def check_capacity(self, model: str, nbytes: int) -> None:
        """Overloaded (429) before the body is read when the model's queue is already full."""
        self._refuse_if_draining()
        admission = self._admission.get(model)
        if admission is not None:
            admission.check_room(nbytes)

    def admission_stats(self) -> dict[str, dict[str, Any]]:
        return {name: {"in_flight": a.in_flight, "waiting": a.waiting, "queued_bytes": a.queued_bytes}
                for name, a in self._admission.items()}

    def busy(self) -> bool:
        return any(a.in_flight or a.waiting for a in self._admission.values())

    async def drain(self, grace_s: float) -> bool:
        """Refuse new work, let admitted work finish; True if everything finished in time."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.busy():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


def _check_shape(name: str, shape: tuple[int, ...], dims: tuple[int, ...], max_batch: int) -> int | None:
    """Validate one input's shape against the model's dims; returns its batch rows (if batched)."""
    rows = None
    trailing = shape
    if max_batch > 0:
        if len(shape) != len(dims) + 1:
            raise InvalidInput(f"input '{name}': shape {list(shape)} must be [batch, {', '.join(map(str, dims))}]")
        rows, trailing = shape[0], shape[1:]
        if rows > max_batch:
            raise LimitExceeded(f"input '{name}': batch of {rows} exceeds max_batch_size {max_batch}")
        if rows == 0:
            raise InvalidInput(f"input '{name}': empty batch")
    if len(trailing) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, trailing, strict=True)):
        where = " after the batch dimension" if max_batch > 0 else ""
        raise InvalidInput(f"input '{name}': shape {list(shape)} does not match model dims {list(dims)}{where}")
    return rows


def input_plan(target: ModelVersion) -> dict[str, _InputPlan]:
    """Expected inputs: from model.toml where declared, else from the runtime's ports."""
    compiled = target.compiled
    assert compiled is not None
    declared = {spec.name: spec for spec in target.config.inputs}
    batched = target.config.max_batch_size > 0
    plan = {}
    for port in compiled.inputs:
        spec = declared.get(port.name) or TensorSpec(
            port.name, port.datatype, port.shape[1:] if batched and port.shape else port.shape)
        plan[port.name] = _InputPlan(TO_NUMPY[spec.datatype], spec.datatype, spec.dims)
    return plan
