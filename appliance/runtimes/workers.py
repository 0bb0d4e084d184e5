"""A fixed set of threads that run submitted calls: what the ONNX Runtime backend runs batches on.

``concurrent.futures.ThreadPoolExecutor`` would do the job, but for a call that takes microseconds
its bookkeeping is most of the hop: every submit builds a ``Future`` (with its own condition
variable), a work item, and re-checks the pool size, and the worker then takes that condition's
lock twice to mark the future running and done. Nobody waits on that future (the result reaches the
event loop through the call's own callback). Here a submit is one ``SimpleQueue.put`` (C code)
and a worker is a loop around ``get``: a round trip from the loop to a worker and back measured
9.3 against 13.4–18.5 CPU µs on one core (``docs/benchmarks.md``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from appliance.system.threadname import name_os_thread
from appliance.system.threadsched import defer_to_event_loop

log = logging.getLogger(__name__)

_STOP = None


class WorkerThreads:
    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._name = name
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        """Run ``call(*args)`` on a worker; it must report its own result (and errors)."""
        if self._closed:
            raise RuntimeError(f"{self._name} workers are shut down")
        self._queue.put((call, args))

    def shutdown(self) -> None:
        """Run what was submitted, then stop every worker and wait for them."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        name_os_thread(self._name)
        defer_to_event_loop()
        get = self._queue.get
        while (task := get()) is not _STOP:
            call, args = task
            try:
                call(*args)
            except Exception:  # the call's own error path failed: keep the worker alive
                log.exception("%s worker: unhandled error", self._name)
