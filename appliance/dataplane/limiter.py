"""An adaptive concurrency limit: how many requests one model version may hold in flight.

A fixed limit is either too low for a model that gains from batching or too high for a model whose
requests only queue behind each other; both need tuning per model and host. This limiter finds
the limit from latency alone, in the spirit of TCP Vegas and Envoy's adaptive-concurrency filter
(gradient controller):

- **no-load latency**: the latency (90th percentile) of a window in which one request at a time was
  in flight, re-measured every ``probe_interval_s`` by holding admission to one request for one
  window (as Envoy's minRTT window does), so a long overload cannot talk the estimate up;
- **each window** (``window_s``, at least ``min_samples`` answers) compares its 90th percentile with
  ``tolerance`` × the no-load latency: within it, and with the limit actually reached, the limit
  grows by one step (additive increase: throughput may still grow); beyond it, the limit shrinks
  in proportion (multiplicative decrease: only latency grows).

Latency here is what the service measures from admission to answer (batching, inference, the
audit commit), so whatever a request waits on in the server counts. The floor keeps every runtime
slot busy, so a batching model is never starved below one request per slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: Which latency of a window the controller compares: the 90th percentile, not the median, so the
#: limit stops growing as soon as the tail (what a p99 objective sees) starts to stretch.
QUANTILE = 0.9


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Knobs of the controller; the defaults need no tuning per model."""

    initial: int = 16
    floor: int = 1
    cap: int = 64
    window_s: float = 0.1
    min_samples: int = 8
    tolerance: float = 1.3
    probe_interval_s: float = 30.0
    max_backoff_s: float = 10.0


class GradientLimit:
    """The limit and its inputs. Called on the event loop only (no locking)."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.floor = max(1, settings.floor)
        self.cap = max(self.floor, settings.cap)
        self.limit = min(self.cap, max(self.floor, settings.initial))
        self.noload_s = 0.0  # 0 until the first quiet window has been measured
        self._samples: list[float] = []
        self._window_start = clock()
        self._peak_in_flight = 0
        self._probing = False
        self._next_probe = self._window_start  # measure the no-load latency right after the first window
        self._limit_before_probe = self.limit
        # A level that was tried and had to be given up is tried again only after a back-off that
        # doubles each time (up to ``max_backoff_s``): growth must keep probing for headroom, but an
        # objective on the tail cannot afford to spend every other window above the knee.
        self._ceiling: int | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._grown = False

    @property
    def effective(self) -> int:
        """What admission enforces now: one request at a time while a no-load probe window runs."""
        return 1 if self._probing else self.limit

    def observe(self, latency_s: float, in_flight: int) -> None:
        """One answered request: its latency and how many were in flight when it was admitted."""
        if self._probing and in_flight > 1:
            return  # admitted before the probe began: it did not see a quiet server
        self._samples.append(latency_s)
        if in_flight > self._peak_in_flight:
            self._peak_in_flight = in_flight
        now = self._clock()
        if now - self._window_start >= self.settings.window_s and len(self._samples) >= self.settings.min_samples:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        samples = self._samples
        samples.sort()
        median = samples[int(len(samples) * QUANTILE)]  # the window's 90th percentile
        peak = self._peak_in_flight
        self._samples = []
        self._peak_in_flight = 0
        self._window_start = now
        if self._probing:
            self._end_probe(median, now)
            return
        if peak <= 1:  # a quiet window measures the no-load latency as it is now
            self.noload_s = median
            self._next_probe = now + self.settings.probe_interval_s
        elif not self.noload_s or median < self.noload_s:
            self.noload_s = median
        self._adjust(median, peak, now)
        if now >= self._next_probe and peak > 1:
            self._start_probe()

    def _adjust(self, median: float, peak: int, now: float) -> None:
        target = self.noload_s * self.settings.tolerance
        if median <= target:
            if self._ceiling is not None and self.limit >= self._ceiling:
                self._ceiling, self._backoff_s = None, 0.0  # the level that failed now holds
            grown = self.limit + max(1, self.limit // 8)
            blocked = self._ceiling is not None and grown >= self._ceiling and now < self._retry_at
            # Only a limit that was reached is evidence that more may help.
            self._grown = peak >= self.limit and not blocked and grown <= self.cap
            if self._grown:
                self.limit = grown
            return
        if self._grown:  # the step just taken went past the knee: remember it, back off before retrying
            self._ceiling = self.limit
            self._backoff_s = min(self.settings.max_backoff_s, max(4 * self.settings.window_s, 2 * self._backoff_s))
            self._retry_at = now + self._backoff_s
        self._grown = False
        gradient = max(0.5, target / median)
        self.limit = max(self.floor, min(self.limit - 1, int(self.limit * gradient)))

    def _start_probe(self) -> None:
        self._probing = True
        self._limit_before_probe = self.limit

    def _end_probe(self, median: float, now: float) -> None:
        self._probing = False
        self.noload_s = median
        self.limit = self._limit_before_probe
        self._next_probe = now + self.settings.probe_interval_s
