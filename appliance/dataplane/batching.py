"""Dynamic batcher: one queue per model version, feeding the runtime's slots.

Adaptive by design: while a runtime slot is free a request runs at once (no added delay at
light load); while every slot is busy, arrivals accumulate and the next free slot takes them all
(up to ``max_batch_size``) as one batch — so batches grow with load. ``max_queue_delay`` only
applies when ``preferred_batch_size`` is configured (Triton's semantics): a smaller batch then
waits at most that long for company.

Pad axes (a lane's option, e.g. token tensors of a text model): requests whose named inputs differ
only in the length of one axis still share a batch; the shorter rows are padded with the lane's
pad value up to the batch's longest (the attention mask makes the padding invisible to the model).

Each request gets its own future; a runtime error fails every request of that batch; a request
whose deadline passed while queued is answered ``DeadlineExceeded`` and never reaches the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from appliance.errors import DeadlineExceeded, InferenceFailed
from appliance.runtimes import CompiledModel, Tensors

#: Observer told the size (rows) of each batch dispatched.
BatchObserver = Callable[[int, int], None]
#: Input name → (axis, pad value): inputs whose length along ``axis`` may differ within a batch.
PadAxes = Mapping[str, tuple[int, int | float]]


@dataclass(slots=True)
class _Pending:
    inputs: Tensors
    rows: int
    signature: tuple[object, ...]
    future: asyncio.Future[tuple[Tensors, int]]
    deadline: float | None


def signature(inputs: Tensors, pad_axes: PadAxes | None = None) -> tuple[object, ...]:
    """Requests can share a batch only if every input agrees beyond the batch dimension (a pad
    axis excepted)."""
    if not pad_axes:
        return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())
    return tuple((name, a.dtype.str, _unpadded_shape(a, pad_axes.get(name))) for name, a in inputs.items())


# --- pad axes: the one place where requests of different lengths are joined -----------------
def _unpadded_shape(array: np.ndarray, pad: tuple[int, int | float] | None) -> tuple[int, ...]:
    shape = list(array.shape[1:])
    if pad is not None and 0 < pad[0] < array.ndim:
        shape[pad[0] - 1] = -1
    return tuple(shape)


def concatenate_padded(arrays: list[np.ndarray], pad: tuple[int, int | float] | None) -> np.ndarray:
    """Concatenate along the batch axis, padding ``pad``'s axis to the longest with its value."""
    if pad is None or len({a.shape for a in arrays}) == 1:
        return np.concatenate(arrays)
    axis, value = pad
    longest = max(a.shape[axis] for a in arrays)
    padded = []
    for array in arrays:
        if array.shape[axis] < longest:
            widths = [(0, 0)] * array.ndim
            widths[axis] = (0, longest - array.shape[axis])
            array = np.pad(array, widths, constant_values=value)
        padded.append(array)
    return np.concatenate(padded)


class Batcher:
    def __init__(self, compiled: CompiledModel, *, max_batch_size: int, max_queue_delay_s: float = 0.0,
                 preferred_batch_size: tuple[int, ...] = (), observer: BatchObserver | None = None,
                 pad_axes: PadAxes | None = None) -> None:
        self._compiled = compiled
        self._pad_axes = dict(pad_axes or {})
        self._max_rows = max(1, max_batch_size)
        self._batched = max_batch_size > 0
        self._delay = max_queue_delay_s
        self._preferred = preferred_batch_size
        self._observer = observer
        self._free = compiled.slots
        self._pending: deque[_Pending] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def slots(self) -> int:
        """Batches the runtime runs at once."""
        return self._compiled.slots

    async def run(self, inputs: Tensors, deadline: float | None = None) -> tuple[Tensors, int]:
        """Infer ``inputs`` (batch dimension first when the model is batched).

        Returns this request's outputs and the size of the batch it ran in.
        """
        rows = next(iter(inputs.values())).shape[0] if self._batched and inputs else 1
        future: asyncio.Future[tuple[Tensors, int]] = self._loop.create_future()
        self._pending.append(_Pending(inputs, rows, signature(inputs, self._pad_axes), future, deadline))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._free > 0 and self._pending:
            if self._should_wait():
                return
            batch = self._take_batch()
            if batch:
                self._free -= 1
                self._start(batch)

    def _should_wait(self) -> bool:
        """With preferred sizes, hold a small batch up to the queue delay for company."""
        if not self._preferred or not self._batched or self._delay <= 0:
            return False
        rows = sum(p.rows for p in self._pending)
        if rows >= self._preferred[0] or rows >= self._max_rows:
            return False
        if self._timer is None:
            self._timer = self._loop.call_later(self._delay, self._timer_fired)
            return True
        return True

    def _timer_fired(self) -> None:
        self._timer = None
        preferred, self._preferred = self._preferred, ()
        try:
            self._dispatch()
        finally:
            self._preferred = preferred

    def _take_batch(self) -> list[_Pending]:
        """The oldest live request and the queued ones that can share its batch. The one place
        where requests that were cancelled (client gone) or whose deadline passed are dropped."""
        batch: list[_Pending] = []
        rows, skipped = 0, deque[_Pending]()
        now = time.monotonic()
        while self._pending and rows < self._max_rows and (self._batched or not batch):
            item = self._pending.popleft()
            if item.future.done():
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(DeadlineExceeded("deadline passed while queued; not run"))
            elif not batch or (item.signature == batch[0].signature and rows + item.rows <= self._max_rows):
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
        self._pending.extendleft(reversed(skipped))
        return batch

    def _start(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {name: concatenate_padded([p.inputs[name] for p in batch], self._pad_axes.get(name))
                      for name in batch[0].inputs}
        rows = sum(p.rows for p in batch)
        if self._observer is not None:
            self._observer(rows, len(batch))
        loop = self._loop

        def done(result: Tensors | BaseException) -> None:
            loop.call_soon_threadsafe(self._complete, batch, rows, result)

        try:
            self._compiled.start(inputs, done)
        except Exception as exc:  # e.g. a runtime already closed: give the slot back, fail the batch
            loop.call_soon(self._complete, batch, rows, exc)

    def _complete(self, batch: list[_Pending], rows: int, result: Tensors | BaseException) -> None:
        self._free += 1
        try:
            if isinstance(result, BaseException):
                error = InferenceFailed(f"inference failed: {type(result).__name__}: {result}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            else:
                self._deliver(batch, rows, result)
        finally:
            self._dispatch()

    def _deliver(self, batch: list[_Pending], rows: int, outputs: Tensors) -> None:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result((outputs, rows))
            return
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != rows:
                error = InferenceFailed(f"output '{name}' has shape {array.shape}; cannot split a batch of {rows}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
        offset = 0
        for item in batch:
            part = {name: array[offset:offset + item.rows] for name, array in outputs.items()}
            offset += item.rows
            if not item.future.done():
                item.future.set_result((part, rows))
