"""The one small interface both runtimes implement.

A :class:`CompiledModel` runs whole batches. ``start`` never blocks: the caller (the batcher)
only calls it while it holds one of the model's ``slots``, and the result arrives through a
callback on a runtime thread — so the event loop never waits on inference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Tensors = dict[str, np.ndarray]
#: Called once per ``start`` from a runtime thread with the outputs or the exception raised.
Completion = Callable[[Tensors | BaseException], None]


class RuntimeLoadError(RuntimeError):
    """The artifact could not be read or compiled; the version shows as not ready."""


@dataclass(frozen=True, slots=True)
class PortInfo:
    name: str
    datatype: str
    #: Shape as the runtime reports it; -1 marks a dynamic dimension.
    shape: tuple[int, ...]


class CompiledModel(Protocol):
    runtime: str
    device: str
    slots: int
    inputs: tuple[PortInfo, ...]
    outputs: tuple[PortInfo, ...]

    def start(self, inputs: Tensors, done: Completion) -> None:
        """Begin one inference; ``done`` is called exactly once, on another thread."""

    def infer(self, inputs: Tensors) -> Tensors:
        """Run synchronously (warm-up, tests, benchmarks). Not for the event loop."""

    def close(self) -> None:
        """Release runtime resources (threads, compiled graph)."""
