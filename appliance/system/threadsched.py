"""Let the event loop keep its core when it wakes a helper thread (``SCHED_BATCH``).

A runtime worker or the audit writer is woken by the loop (a batch submitted, records handed
over) and needs the GIL to report back. Under the default policy the kernel lets the woken thread
preempt the loop at once when they share a core, and it then only waits for the GIL the loop
still holds: two context switches per hand-off, and the loop has had less time to gather the
next batch. ``SCHED_BATCH`` takes that wake-up preemption away and nothing else (same nice level,
same share of the CPU; a thread on an idle core still starts at once). One core, every stage on,
c=16: mean batch 3.1 → 5.1 requests and 2–9 % more requests/s in three alternating pairs
(docs/benchmarks.md). Unprivileged and allowed by the systemd unit (only real-time policies are
restricted there).
"""

from __future__ import annotations

import os


def defer_to_event_loop() -> bool:
    """Best effort, for the calling thread: Linux only; False where the call is refused."""
    if not hasattr(os, "SCHED_BATCH"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        return False
    return True


def yield_to_live_work() -> bool:
    """Best effort, for the calling thread: ``SCHED_BATCH`` and the lowest nice level (19).

    For a batch job's threads in the server. At nice 0 a job thread in a CPU burst (a chunk's
    Parquet write, its digest) keeps the core for a scheduler slice when a live request wakes the
    event loop; at nice 19 its weight is 15 against the loop's 1024, so the loop gets the core at
    once, and the job still runs (unlike ``SCHED_IDLE``, under which a job thread that held the
    GIL and got no core stalled the loop for 0.6 s).
    """
    deferred = defer_to_event_loop()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # on Linux ``who = 0`` is the calling thread
    except (AttributeError, OSError):
        return deferred
    return True
