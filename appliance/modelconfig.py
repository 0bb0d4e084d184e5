"""``model.toml``: how one model is served (tensors, batching, limits, cache, versions).

Names follow Triton/OVMS where the concept is the same (``max_batch_size``, ``dims``,
``max_queue_delay_us``, ``preferred_batch_size``, ``version_policy``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.dataplane.tensors import TO_NUMPY

RUNTIMES = ("auto", "openvino", "onnxruntime")


class ModelConfigError(ValueError):
    """model.toml is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    #: Dimensions without the batch dimension when ``max_batch_size > 0``; -1 is variable.
    dims: tuple[int, ...]

    def to_metadata(self, batched: bool) -> dict[str, Any]:
        shape = ([-1] if batched else []) + list(self.dims)
        return {"name": self.name, "datatype": self.datatype, "shape": shape}


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions are served: the ``latest`` N, ``specific`` ones, or ``all``."""

    latest: int | None = 1
    specific: tuple[int, ...] = ()
    all: bool = False

    def select(self, available: list[int]) -> list[int]:
        if self.all:
            return sorted(available)
        if self.specific:
            return sorted(v for v in available if v in self.specific)
        return sorted(available)[-(self.latest or 1):]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    runtime: str = "auto"
    device: str | None = None
    max_batch_size: int = 0
    labels: tuple[str, ...] = ()
    description: str = ""
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    max_queue_delay_us: int | None = None
    preferred_batch_size: tuple[int, ...] = ()
    max_concurrency: int | None = None
    max_queue: int | None = None
    adaptive: bool | None = None  # None: the server's limits.adaptive
    cache_enabled: bool = False
    capture_payloads: bool = False
    #: ``[rollout]``: default thresholds of this model's rollouts (min_samples, max_error_rate, ...).
    rollout: tuple[tuple[str, float], ...] = ()

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def _tensor(raw: Any, where: str) -> TensorSpec:
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{where}: must be a table")
    name, datatype, dims = raw.get("name"), raw.get("datatype"), raw.get("dims")
    if not isinstance(name, str) or not name:
        raise ModelConfigError(f"{where}: 'name' is required")
    if datatype not in TO_NUMPY:
        raise ModelConfigError(f"{where}: datatype {datatype!r} is not a protocol datatype")
    if not isinstance(dims, list) or not all(isinstance(d, int) and d >= -1 for d in dims):
        raise ModelConfigError(f"{where}: 'dims' must be a list of integers (-1 for variable)")
    return TensorSpec(name, datatype, tuple(dims))


def _policy(raw: Any, where: str) -> VersionPolicy:
    if raw is None:
        return VersionPolicy()
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ModelConfigError(f"{where}: give exactly one of latest = N, specific = [..], all = true")
    ((kind, value),) = raw.items()
    if kind == "latest" and isinstance(value, int) and value > 0:
        return VersionPolicy(latest=value)
    if kind == "specific" and isinstance(value, list) and all(isinstance(v, int) for v in value):
        return VersionPolicy(latest=None, specific=tuple(value))
    if kind == "all" and value is True:
        return VersionPolicy(latest=None, all=True)
    raise ModelConfigError(f"{where}: invalid version policy {raw!r}")


_TOP_KEYS = {
    "runtime", "device", "max_batch_size", "labels", "description", "version_policy", "input",
    "output", "batching", "limits", "cache", "audit", "rollout",
}


def parse_model_config(name: str, data: dict[str, Any], source: str = "model.toml") -> ModelConfig:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ModelConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    runtime = data.get("runtime", "auto")
    if runtime not in RUNTIMES:
        raise ModelConfigError(f"{source}: runtime must be one of {', '.join(RUNTIMES)}")
    max_batch = data.get("max_batch_size", 0)
    if not isinstance(max_batch, int) or max_batch < 0:
        raise ModelConfigError(f"{source}: max_batch_size must be a non-negative integer")
    batching = data.get("batching", {})
    limits = data.get("limits", {})
    cache = data.get("cache", {})
    audit = data.get("audit", {})
    preferred = tuple(batching.get("preferred_batch_size", ()))
    if any(not isinstance(p, int) or p <= 0 or p > max(max_batch, 1) for p in preferred):
        raise ModelConfigError(f"{source}: preferred_batch_size entries must be in 1..max_batch_size")
    return ModelConfig(
        name=name,
        inputs=tuple(_tensor(t, f"{source} [[input]] #{i}") for i, t in enumerate(data.get("input", []))),
        outputs=tuple(_tensor(t, f"{source} [[output]] #{i}") for i, t in enumerate(data.get("output", []))),
        runtime=runtime,
        device=data.get("device"),
        max_batch_size=max_batch,
        labels=tuple(str(label) for label in data.get("labels", [])),
        description=str(data.get("description", "")),
        version_policy=_policy(data.get("version_policy"), f"{source} [version_policy]"),
        max_queue_delay_us=batching.get("max_queue_delay_us"),
        preferred_batch_size=tuple(sorted(preferred)),
        max_concurrency=limits.get("max_concurrency"),
        max_queue=limits.get("max_queue"),
        adaptive=_optional_bool(limits.get("adaptive"), f"{source} [limits] adaptive"),
        cache_enabled=bool(cache.get("enabled", False)),
        capture_payloads=bool(audit.get("capture_payloads", False)),
        rollout=_rollout_defaults(data.get("rollout", {}), f"{source} [rollout]"),
    )


def _rollout_defaults(raw: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(raw, dict) or any(isinstance(v, bool) or not isinstance(v, int | float) for v in raw.values()):
        raise ModelConfigError(f"{where}: must be a table of numbers")
    return tuple(sorted((str(k), float(v)) for k, v in raw.items()))


def _optional_bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ModelConfigError(f"{where}: must be true or false")


def load_model_config(model_dir: Path) -> ModelConfig:
    path = model_dir / "model.toml"
    if not path.exists():
        return ModelConfig(name=model_dir.name)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelConfigError(f"{path}: {exc}") from None
    return parse_model_config(model_dir.name, data, str(path))
