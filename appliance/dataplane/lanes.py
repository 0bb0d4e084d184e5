"""A lane: the serving state of one model version — its admission, batcher, input plan and metrics.

The service builds a lane the first time a version is addressed and keeps it beside the version
(never attached to the model object). Validation lives here because it is per version: what a
request must look like is what this version's plan says.

Processing (``dataplane.processing``) is also per version: a request in public form (strings, image
files) is checked against the public plan, turned into the model's tensors in :meth:`Lane.infer`
(off the loop) and its outputs turned into answers (top-K labels) in :meth:`Lane.select`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.config import Settings
from appliance.dataplane.admission import Admission
from appliance.dataplane.batching import Batcher
from appliance.dataplane.context import RequestContext
from appliance.dataplane.limiter import GradientLimit, LimitSettings
from appliance.dataplane.processing import Processing, classify
from appliance.dataplane.tensors import TO_NUMPY, InferRequest
from appliance.errors import InvalidInput, LimitExceeded
from appliance.metrics import Metrics, VersionMetrics
from appliance.modelconfig import TensorSpec
from appliance.repository import ModelVersion
from appliance.runtimes import Tensors


@dataclass(slots=True)
class InputPlan:
    dtype: np.dtype
    datatype: str
    dims: tuple[int, ...]  # without the batch dimension when batched


@dataclass
class Lane:
    target: ModelVersion
    admission: Admission
    batcher: Batcher
    plan: dict[str, InputPlan]
    output_names: tuple[str, ...]
    metrics: VersionMetrics
    version_label: str
    users: int = 0  # requests that resolved this version and are not answered yet (a retire waits for 0)
    processing: Processing | None = None
    public_plan: dict[str, InputPlan] | None = None  # what a request in public form sends (strings, images)

    def validate(self, request: InferRequest) -> dict[str, np.ndarray]:
        """The request's tensors by name, checked against the plan (names, datatypes, shapes)."""
        plan, target = self.plan, self.target
        if self.public_plan is not None and self.processing is not None \
                and self.processing.applies([t.name for t in request.inputs]):
            plan = self.public_plan
        inputs: dict[str, np.ndarray] = {}
        batch_rows = None
        for tensor in request.inputs:
            spec = plan.get(tensor.name)
            if spec is None:
                raise InvalidInput(f"model '{target.name}' has no input '{tensor.name}' "
                                   f"(inputs: {', '.join(plan)})")
            if tensor.datatype != spec.datatype:
                raise InvalidInput(f"input '{tensor.name}': datatype {tensor.datatype}, "
                                   f"model expects {spec.datatype}")
            rows = check_shape(tensor.name, tensor.shape, spec.dims, target.config.max_batch_size)
            if batch_rows is not None and rows != batch_rows:
                raise InvalidInput("all inputs must have the same batch size")
            batch_rows = rows
            inputs[tensor.name] = tensor.data
        missing = [name for name in plan if name not in inputs]
        if missing:
            raise InvalidInput(f"missing input(s): {', '.join(missing)}")
        return inputs

    # --- processing: the request's public form in, answers out -----------------------------
    async def infer(self, inputs: Tensors, deadline: float | None,
                    ctx: RequestContext | None = None) -> tuple[Tensors, int]:
        """Prepare (text → tokens, image → pixels, off the loop), batch and run; the outputs and
        the size of the batch they ran in. ``ctx`` learns the tokens read (OpenAI's usage)."""
        processing = self.processing
        if processing is not None and processing.applies(inputs):
            inputs, tokens = await processing.prepare(inputs)
            if ctx is not None:
                ctx.prompt_tokens = tokens
        return await self.batcher.run(inputs, deadline)

    async def count_tokens(self, inputs: Tensors, ctx: RequestContext) -> None:
        """A cached answer skipped :meth:`infer`: count the texts' tokens for the usage figure."""
        processing = self.processing
        if processing is not None and processing.kind == "text" and processing.applies(inputs):
            _, ctx.prompt_tokens = await processing.prepare(inputs)

    def select(self, outputs: Tensors, wanted: tuple[str, ...], request: InferRequest) -> Tensors:
        """The outputs asked for; those asked with ``classification: K`` as top-K BYTES labels."""
        selected = {name: outputs[name] for name in wanted}
        for output in request.outputs or ():
            if output.classification:
                labels = self.processing.labels if self.processing is not None else ()
                selected[output.name] = classify(outputs[output.name], output.classification, labels)
        return selected

    def wanted_outputs(self, request: InferRequest) -> tuple[str, ...]:
        if not request.outputs:
            return self.output_names
        names = tuple(o.name for o in request.outputs)
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise InvalidInput(f"unknown output(s): {', '.join(unknown)} (outputs: {', '.join(self.output_names)})")
        return names


def build_lane(target: ModelVersion, settings: Settings, metrics: Metrics) -> Lane:
    compiled = target.compiled
    if compiled is None:
        raise ValueError(f"{target.name} version {target.version} is not loaded")  # resolve() returns ready ones
    config = target.config
    batched = config.max_batch_size > 0 and settings.batching.enabled
    label = str(target.version)
    version_metrics = metrics.for_version(target.name, label)
    delay_us = config.max_queue_delay_us
    if delay_us is None:
        delay_us = settings.batching.max_queue_delay_us
    processing = target.processing
    batcher = Batcher(compiled, max_batch_size=config.max_batch_size if batched else 0,
                      max_queue_delay_s=delay_us / 1e6, preferred_batch_size=config.preferred_batch_size,
                      observer=version_metrics.observe_batch, pad_axes=processing.pad_axes if processing else None)
    public = None
    if processing is not None and processing.step is not None:
        public = {processing.public_input: InputPlan(TO_NUMPY["BYTES"], "BYTES", ())}
    return Lane(target, build_admission(target, settings, compiled.slots), batcher, input_plan(target),
                tuple(p.name for p in compiled.outputs), version_metrics, label, processing=processing,
                public_plan=public)


def build_admission(target: ModelVersion, settings: Settings, slots: int) -> Admission:
    """Adaptive by default (model.toml may say otherwise). The floor is one request: runtime slots
    beyond the cores only time-share them, so more concurrency must earn its place by latency.
    With N worker processes each holds 1/N of the fixed caps (rounded up), so they hold server-wide."""
    limits, config = settings.limits, target.config
    share = settings.server.limit_share  # worker processes: each holds its part of the server's caps
    cap = -(-(config.max_concurrency or limits.max_concurrency) // share)
    adaptive = limits.adaptive if config.adaptive is None else config.adaptive
    limiter = None
    if adaptive:
        limiter = GradientLimit(LimitSettings(initial=min(cap, max(16, slots)), floor=1,
                                              cap=cap, tolerance=max(1.0, limits.adaptive_tolerance)))
    queue = config.max_queue if config.max_queue is not None else (0 if adaptive else limits.max_queue)
    queue = -(-queue // share)
    return Admission(f"model '{target.name}' version {target.version}", max_concurrency=cap, max_queue=queue,
                     max_queued_bytes=limits.max_queued_bytes, adaptive=limiter)


def check_shape(name: str, shape: tuple[int, ...], dims: tuple[int, ...], max_batch: int) -> int | None:
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


def input_plan(target: ModelVersion) -> dict[str, InputPlan]:
    """Expected inputs: from model.toml where declared, else from the runtime's ports."""
    compiled = target.compiled
    if compiled is None:
        return {}
    declared = {spec.name: spec for spec in target.config.inputs}
    batched = target.config.max_batch_size > 0
    plan = {}
    for port in compiled.inputs:
        spec = declared.get(port.name) or TensorSpec(
            port.name, port.datatype, port.shape[1:] if batched and port.shape else port.shape)
        plan[port.name] = InputPlan(TO_NUMPY[spec.datatype], spec.datatype, spec.dims)
    return plan
