"""Mirrored requests, batched: the inputs a rollout compares on another version, gathered and run
together in the background.

Mirroring each request on its own would cost the event loop a runtime hand-off and a comparison
per request — at half load on a small model, enough to raise the primary's median latency by
a third. Gathered for ``window_s`` (or until ``max_rows``), mirrors cost one hand-off and one
comparison per window. Nothing here is awaited by a request, and mirrors take no admission slot (a slot held by a mirror
would turn a live request to that version away with 429): a full buffer, or a window still running
when the next one is due, sheds the mirror; a failure only counts against the candidate.
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


class Mirror:
    def __init__(self, lane: Lane, on_result: MirrorResult, *, window_s: float = 0.01, max_rows: int = 256) -> None:
        self.lane = lane
        self._on_result = on_result
        self._window_s = window_s
        self._max_rows = max(1, min(max_rows, lane.target.config.max_batch_size or 1))
        self._inputs: list[Tensors] = []
        self._outputs: list[Tensors] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None  # at most one window runs at a time

    def offer(self, inputs: Tensors, outputs: Tensors, rows: int) -> bool:
        """Queue one request's inputs and the primary's outputs; False (shed) when the window is full
        or the model runs one request at a time (no batch dimension to gather along)."""
        batched = self.lane.target.config.max_batch_size > 0
        if self._inputs and (not batched or signature(inputs) != signature(self._inputs[0])):
            return False
        if self._rows + rows > self._max_rows:
            return False
        self._inputs.append(inputs)
        self._outputs.append(outputs)
        self._rows += rows
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._flush)
        return True

    def _flush(self) -> None:
        self._timer = None
        inputs, outputs, self._inputs, self._outputs, self._rows = self._inputs, self._outputs, [], [], 0
        if not inputs or (self._running is not None and not self._running.done()):
            return  # the previous window still runs: the server is busy, this one is shed
        self._running = asyncio.create_task(self._run(_concat(inputs), _concat(outputs), len(inputs)))

    async def _run(self, inputs: Tensors, primary: Tensors, requests: int) -> None:
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
