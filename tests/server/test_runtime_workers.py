"""The runtime's worker threads: every submitted call runs, errors do not kill a worker, shutdown
finishes what was queued, and ONNX Runtime batches run on named workers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.runtimes import load_model
from appliance.runtimes.workers import WorkerThreads
from appliance.system.threadname import os_thread_names
from appliance.system.threadsched import yield_to_live_work


def test_every_call_runs_and_a_failing_call_leaves_the_worker_alive(caplog: pytest.LogCaptureFixture) -> None:
    workers = WorkerThreads(2, "test-run")
    seen: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        if i == 3:
            raise ValueError("boom")
        with lock:
            seen.append(i)

    for i in range(200):
        workers.submit(call, i)
    workers.shutdown()  # runs everything queued before it
    assert sorted(seen) == [i for i in range(200) if i != 3]
    assert "boom" in caplog.text
    with pytest.raises(RuntimeError):
        workers.submit(call, 0)
    workers.shutdown()  # twice is harmless


@pytest.mark.usefixtures("sched_batch_allowed")
def test_workers_do_not_preempt_the_event_loop() -> None:
    """SCHED_BATCH: a woken worker waits for the loop's thread to yield instead of preempting it."""
    workers = WorkerThreads(1, "test-run")
    policies: list[int] = []
    workers.submit(lambda: policies.append(os.sched_getscheduler(0)))
    workers.shutdown()
    assert policies == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) != os.SCHED_BATCH  # the caller's own thread is left alone


@pytest.mark.usefixtures("sched_batch_allowed")
def test_batch_job_threads_yield_to_live_work_and_leave_other_threads_alone() -> None:
    """A job's threads: SCHED_BATCH at nice 19 (the thread only); the event loop's thread keeps nice 0."""
    seen: list[tuple[bool, int, int]] = []

    def job_thread() -> None:
        applied = yield_to_live_work()
        seen.append((applied, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)))

    before = os.getpriority(os.PRIO_PROCESS, 0)
    probe = threading.Thread(target=job_thread)
    probe.start()
    probe.join()
    assert seen == [(True, os.SCHED_BATCH, 19)]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_onnxruntime_batches_run_on_named_workers(repository: Path) -> None:
    model = load_model(repository / "digits" / "1" / "model.onnx", artifact_format="onnx", precision="fp32",
                       runtime="onnxruntime", device="CPU")
    x = {"input": np.zeros((3, 64), dtype=np.float32)}
    results: list[object] = []
    names: set[str] = set()
    done = threading.Event()

    def finished(result: object) -> None:
        results.append(result)
        names.update(os_thread_names())
        done.set()

    try:
        model.start(x, finished)
        assert done.wait(30)
        outputs = results[0]
        assert isinstance(outputs, dict)
        np.testing.assert_allclose(outputs["probabilities"], model.infer(x)["probabilities"], rtol=1e-6)
        assert "ort-run" in names
        done.clear()
        model.start({"input": np.zeros((3, 7), dtype=np.float32)}, finished)  # wrong width: error, not a hang
        assert done.wait(30)
        assert isinstance(results[1], Exception)
    finally:
        model.close()
