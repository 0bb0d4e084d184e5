"""Mirrored requests, batched: the inputs a rollout compares on another version, gathered and run
together in the background.

Mirroring each request on its own would cost the event loop a runtime hand-off and a comparison
per request — at half load on a small model, enough to raise the primary's median latency by
a third. Gathered for up to ``window_s`` or until the model's largest batch is full, mirrors cost
one hand-off and one comparison per window: at half load on the bundled model a 10 ms window held
~30 requests, a full one holds 64, which halves what the windows cost per request (at half load
every percent of extra CPU shows in the primary's median, see docs/benchmarks.md).

Nothing here is awaited by a request, and mirrors take no admission slot (a slot held by a mirror
would turn a live request to that version away with 429): a window that is due while the previous
one still runs is shed whole (the server is busy), and a failure only counts against the candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from appliance.dataplane.batching import signature
from appliance.dataplane.lanes import Lane
from appliance.errors import ApplianceError

Tensors = dict[str, np.ndarray]
#: Told each finished window: outputs of the primary, outputs of the mirror (None when it failed), and
#: how many requests the window held.
MirrorResult = Callable[[Tensors, Tensors | None, int], None]
#: Told how many requests were not mirrored after all (their window was shed).
MirrorShed = Callable[[int], None]


class Mirror:
    def __init__(self, lane: Lane, on_result: MirrorResult, on_shed: MirrorShed, *, window_s: float = 0.05,
                 max_rows: int = 256) -> None:
        self.lane = lane
        self._on_result = on_result
        self._on_shed = on_shed
        self._window_s = window_s
        self._max_rows = max(1, min(max_rows, lane.target.config.max_batch_size or 1))
        self._inputs: list[Tensors] = []
        self._outputs: list[Tensors] = []
        self._signature: tuple[object, ...] = ()  # what every input of the gathering window agrees on
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None  # at most one window runs at a time

    def offer(self, inputs: Tensors, outputs: Tensors, rows: int) -> bool:
        """Queue one request's inputs and the primary's outputs; False (shed) when they cannot join
        a window: another shape, or more rows than the model takes in one batch."""
        shape = signature(inputs)
        if (self._inputs and shape != self._signature) or rows > self._max_rows:
            return False
        if self._rows + rows > self._max_rows:
            self._flush()  # full: run what is gathered now, start the next window with this request
        self._signature = shape
        self._inputs.append(inputs)
        self._outputs.append(outputs)
        self._rows += rows
        if self._rows >= self._max_rows:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._flush)
        return True

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        inputs, outputs, self._inputs, self._outputs, self._rows = self._inputs, self._outputs, [], [], 0
        if not inputs:
            return
        if self._running is not None and not self._running.done():
            self._on_shed(len(inputs))  # the previous window still runs: the server is busy
            return
        self._running = asyncio.create_task(self._run(inputs, outputs))

    async def _run(self, parts: list[Tensors], primary_parts: list[Tensors]) -> None:
        # Gathered here, in a task of its own, not in the request whose mirror filled the window:
        # that request's answer is not held up by the copies.
        inputs, primary, requests = _concat(parts), _concat(primary_parts), len(parts)
        try:
            other, _ = await self.lane.infer(inputs, None)  # processing included, as for the primary
        except ApplianceError:
            self._on_result(primary, None, requests)
            return
        self._on_result(primary, other, requests)


def _concat(parts: list[Tensors]) -> Tensors:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
