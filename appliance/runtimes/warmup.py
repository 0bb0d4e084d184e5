"""One inference before a version takes traffic: the first call pays for lazy allocations and
kernel selection, and a model that cannot run at all is found before it replaces one that can."""

from __future__ import annotations

import numpy as np

from appliance.dataplane.tensors import TO_NUMPY
from appliance.runtimes.base import CompiledModel, RuntimeLoadError


def warm_up(compiled: CompiledModel) -> None:
    """Run zeros of each input's shape (dynamic dimensions as 1); BYTES inputs are not warmed up."""
    inputs = {}
    for port in compiled.inputs:
        if port.datatype == "BYTES" or port.datatype not in TO_NUMPY:
            return
        shape = tuple(1 if d < 0 else d for d in port.shape)
        inputs[port.name] = np.zeros(shape, dtype=TO_NUMPY[port.datatype])
    try:
        compiled.infer(inputs)
    except Exception as exc:  # whatever the runtime raises, the version must not serve
        raise RuntimeLoadError(f"warm-up inference failed: {type(exc).__name__}: {exc}") from None
