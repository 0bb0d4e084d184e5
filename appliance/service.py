"""The data plane: one service the HTTP layer (and later gRPC) calls.

The whole request path is readable in :meth:`InferenceService.infer`:
resolve → validate → cache → admission → batcher/runtime → cache fill → audit → metrics.
Authentication happens before (middleware), encoding after (codec). Nothing here imports the
web framework.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from appliance.admission import Admission
from appliance.batching import Batcher
from appliance.cache import PredictionCache, cache_key
from appliance.config import Settings
from appliance.errors import ApplianceError, InvalidInput, LimitExceeded, ServiceUnavailable
from appliance.metrics import Metrics, VersionMetrics
from appliance.modelconfig import TensorSpec
from appliance.protocol.codec import InferRequest, InferResponse
from appliance.protocol.datatypes import TO_NUMPY
from appliance.repository import ModelVersion, Repository


@dataclass(slots=True)
class RequestContext:
    """Who asked, and how: filled by the HTTP layer (auth, headers) before the service runs."""

    request_id: str = ""
    principal: str = "anonymous"
    client: str = ""
    deadline: float | None = None
    priority: int = 0
    use_cache: bool = True
    protocol: str = "rest"
    started: float = field(default_factory=time.monotonic)
    # Filled by the service for the HTTP layer and the request log.
    cache_hit: bool = False
    batch_size: int = 0
    model: str = ""
    version: str = ""


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
        self._runtimes: dict[int, _VersionRuntime] = {}
        self._admission: dict[str, Admission] = {}
        self._outcome_hooks: list[Callable[[InferOutcome], Awaitable[None] | None]] = []

    # --- the request path --------------------------------------------------------------
    async def infer(self, model: str, version: str | None, request: InferRequest,
                    ctx: RequestContext) -> InferResponse:
        if self.draining:
            raise ServiceUnavailable("server is shutting down", retry_after=5.0)
        target = self.repository.resolve(model, version)
        runtime = self._runtime(target)
        ctx.model, ctx.version = target.name, runtime.version_label
        inputs = self._validate(target, runtime, request)
        wanted = self._wanted_outputs(runtime, request)
        key = None
        if target.config.cache_enabled and ctx.use_cache:
            key = cache_key(target.name, runtime.version_label, target.loaded_at, wanted, inputs)
            cached = self.cache.get(key)
            if cached is not None:
                runtime.metrics.cache_hit.inc()
                ctx.cache_hit = True
                return await self._finish(target, runtime, request, ctx, cached, wanted)
            runtime.metrics.cache_miss.inc()
        admission = self._admission_for(target)
        async with admission.slot(request.nbytes, ctx.priority, ctx.deadline):
            started = time.monotonic()
            outputs, ctx.batch_size = await runtime.batcher.run(inputs, ctx.deadline)
            runtime.metrics.inference_seconds.observe(time.monotonic() - started)
        if key is not None:
            self.cache.put(key, target.key, outputs)
        return await self._finish(target, runtime, request, ctx, outputs, wanted)

    async def _finish(self, target: ModelVersion, runtime: _VersionRuntime, request: InferRequest,
                      ctx: RequestContext, outputs: dict[str, np.ndarray],
                      wanted: tuple[str, ...]) -> InferResponse:
        selected = {name: outputs[name] for name in wanted}
        if self.audit is not None:
            await self.audit.record_inference(InferOutcome(ctx, target, 200, request, selected))
        runtime.metrics.ok.inc()
        runtime.metrics.request_seconds.observe(time.monotonic() - ctx.started)
        return InferResponse(target.name, runtime.version_label, selected, id=request.id)

    async def record_failure(self, ctx: RequestContext, status: int, error: ApplianceError) -> None:
        """Audit and count a refused or failed request (called by the HTTP error mapping)."""
        self.metrics.requests.labels(ctx.model or "", ctx.version or "", ctx.protocol, str(status)).inc()
        if self.audit is not None and ctx.model:
            await self.audit.record_inference(InferOutcome(ctx, None, status, None, None, error.message))

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
                raise InvalidInput(f"input '{tensor.name}': datatype {tensor.datatype}, model expects {spec.datatype}")
            shape = tensor.shape
            if max_batch > 0:
                if len(shape) != len(spec.dims) + 1:
                    raise InvalidInput(f"input '{tensor.name}': shape {list(shape)} must be "
                                       f"[batch, {', '.join(map(str, spec.dims))}]")
                if shape[0] > max_batch:
                    raise LimitExceeded(f"input '{tensor.name}': batch of {shape[0]} exceeds max_batch_size {max_batch}")
                if shape[0] == 0:
                    raise InvalidInput(f"input '{tensor.name}': empty batch")
                if batch_rows is not None and shape[0] != batch_rows:
                    raise InvalidInput("all inputs must have the same batch size")
                batch_rows = shape[0]
                trailing = shape[1:]
            else:
                trailing = shape
            if len(trailing) != len(spec.dims) or any(d not in (-1, s) for d, s in zip(spec.dims, trailing, strict=True)):
                raise InvalidInput(f"input '{tensor.name}': shape {list(shape)} does not match model dims "
                                   f"{list(spec.dims)}" + (" after the batch dimension" if max_batch > 0 else ""))
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


def tensor_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes (what the audit log stores instead of data)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = tensors[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype.kind == "O":
            for item in array.reshape(-1):
                digest.update(bytes(item) if not isinstance(item, str) else item.encode())
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()
