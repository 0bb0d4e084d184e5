"""The batcher's pad axes (a lane option for token tensors): requests whose named inputs differ only
in length share one batch, padded with the lane's value to the batch's longest; without the option
they do not; tensors of equal length are joined as before."""

from __future__ import annotations

import asyncio

import numpy as np
from test_batcher import FakeRuntime

from appliance.dataplane.batching import Batcher, concatenate_padded
from appliance.runtimes import Tensors


class TokenRuntime(FakeRuntime):
    """Echoes the row sums of ``x`` (any width) so each request's rows can be told apart."""

    def release(self) -> int:
        started, self.started = self.started, []
        for inputs, done in started:
            done({"y": inputs["x"].sum(axis=1, keepdims=True), "width": np.full((len(inputs["x"]), 1),
                                                                             inputs["x"].shape[1])})
        return len(started)


def tokens(count: int, length: int, value: int) -> Tensors:
    return {"x": np.full((count, length), value, dtype=np.int64)}


def test_concatenate_padded_pads_the_named_axis_to_the_longest() -> None:
    joined = concatenate_padded([np.ones((1, 2), np.int64), np.full((2, 4), 3, np.int64)], (1, -1))
    np.testing.assert_array_equal(joined, [[1, 1, -1, -1], [3, 3, 3, 3], [3, 3, 3, 3]])
    same = concatenate_padded([np.ones((1, 3)), np.zeros((1, 3))], (1, 0))
    assert same.shape == (2, 3)


async def test_requests_of_different_lengths_share_a_batch_padded_to_the_longest() -> None:
    runtime = TokenRuntime()
    batcher = Batcher(runtime, max_batch_size=16, pad_axes={"x": (1, 0)})
    busy = asyncio.create_task(batcher.run(tokens(1, 2, 1)))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.run(tokens(n, 2 + n, n))) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    assert runtime.release() == 1
    await asyncio.sleep(0.01)
    assert runtime.release() == 1  # three lengths, one batch
    for n, task in zip((1, 2, 3), waiting, strict=True):
        outputs, batch_rows = await task
        assert batch_rows == 6
        np.testing.assert_array_equal(outputs["y"][:, 0], [n * (2 + n)] * n)  # padding added zeros only
        np.testing.assert_array_equal(outputs["width"][:, 0], [5] * n)  # the batch's longest, not more
    await busy


async def test_without_a_pad_axis_different_lengths_run_in_separate_batches() -> None:
    runtime = TokenRuntime()
    batcher = Batcher(runtime, max_batch_size=16)
    busy = asyncio.create_task(batcher.run(tokens(1, 2, 1)))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.run(tokens(1, length, 1))) for length in (3, 4)]
    await asyncio.sleep(0)
    runtime.release()
    await asyncio.sleep(0.01)
    assert runtime.release() == 1  # only the oldest waiting request: the other has another shape
    await asyncio.sleep(0.01)
    assert runtime.release() == 1
    assert [(await task)[1] for task in waiting] == [1, 1]
    await busy
