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
