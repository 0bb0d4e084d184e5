"""An adaptive concurrency limit: how many requests one model version may hold in flight.

A fixed limit is either too low for a model that gains from batching or too high for a model whose
requests only queue behind each other; both need tuning per model and host. This limiter finds
the limit from latency alone, in the spirit of TCP Vegas and Envoy's adaptive-concurrency filter
(gradient controller), but judged on the **tail**, since that is what a latency objective and
a client's timeout see:

- **no-load latency**: the 99th percentile of answers given while one request at a time was in
  flight: quiet moments, and a probe that holds admission to one request until it has
  ``probe_samples`` answers (as Envoy's minRTT window does), so a long overload cannot talk the
  estimate up. The first probe runs as soon as there is load, on a server that may still be
  accepting the flood's connections, so the next ones follow 1, 2, 4 … s later, up to every
  ``probe_interval_s``;
- **the level's verdict**: answers of windows in which the limit was reached (so they describe
  it) are counted against ``tolerance`` × the no-load p99. Once ``tail_samples`` are in, a level whose
  slow answers stay within 1 % grows by one step (additive increase: the tail allows more, so
  by Little's law throughput grew); one with clearly more (1 % + 2, checked as the answers come
  in, so a level past the knee costs a few slow answers, not a hundred) shrinks in proportion to
  how far its p99 is off (multiplicative decrease: only latency grew); in between it collects
  more. A level whose very median is past the target shrinks after ``min_samples`` answers,
  which is what makes a cold start or a sudden slowdown cheap.

Why the tail and not the median or the 90th percentile (the first version of this module): on the
bundled model under a flood, one more request in flight moved the server's p90 by 7 % (0.72 →
0.76 ms at 2 → 3 in flight) but its p99 by 30 % (0.93 → 1.23 ms), so a p90 rule could not see
the level where a p99 objective breaks, and settled one step past it.

Latency here is what the service measures from admission to answer (batching, inference, the
audit commit), so whatever a request waits on in the server counts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: The tail the controller keeps within ``tolerance`` × no-load: the 99th percentile.
TAIL = 0.99
#: The share of a level's answers that may be slower than the target: what a p99 objective allows.
TAIL_SHARE = 1 - TAIL


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Knobs of the controller; the defaults need no tuning per model."""

    initial: int = 16
    floor: int = 1
    cap: int = 64
    window_s: float = 0.1
    min_samples: int = 8
    tail_samples: int = 100
    probe_samples: int = 400
    tolerance: float = 1.5
    probe_interval_s: float = 30.0
    max_backoff_s: float = 10.0


def tail_of(samples: list[float] | deque[float]) -> float:
    """The 99th percentile of ``samples`` (the sample at rank ceil(0.99 n))."""
    ranked = sorted(samples)
    return ranked[max(0, math.ceil(TAIL * len(ranked)) - 1)]


class GradientLimit:
    """The limit and its inputs. Called on the event loop only (no locking)."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.floor = max(1, settings.floor)
        self.cap = max(self.floor, settings.cap)
        self.limit = min(self.cap, max(self.floor, settings.initial))
        self.noload_s = 0.0  # 0 until the first no-load p99 has been measured
        self._alone: deque[float] = deque(maxlen=max(settings.probe_samples, settings.tail_samples))
        self._window: list[float] = []  # this window's answers admitted within the current limit
        self._level: list[float] = []  # answers of windows that reached the current limit, since its last verdict
        self._window_start = clock()
        self._peak_in_flight = 0
        self._probing = False
        self._probe_taken = 0
        self._probe_wanted = settings.tail_samples
        self._next_probe = self._window_start  # measure the no-load latency as soon as there is load
        self._probe_gap_s = 1.0
        # A level that was tried and had to be given up is tried again only after a back-off that
        # doubles each time (up to ``max_backoff_s``): growth must keep probing for headroom, but an
        # objective on the tail cannot afford to spend every other window above the knee.
        self._ceiling: int | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._grown = False

    @property
    def effective(self) -> int:
        """What admission enforces now: one request at a time while a no-load probe runs."""
        return 1 if self._probing else self.limit

    def observe(self, latency_s: float, in_flight: int) -> None:
        """One answered request: its latency and how many were in flight once it was admitted."""
        if self._probing:
            if in_flight <= 1:  # admitted before the probe began: it did not see a quiet server
                self._alone.append(latency_s)
                self._probe_taken += 1
                if self._probe_taken >= self._probe_wanted:
                    self._end_probe()
            return
        if in_flight > self._peak_in_flight:
            self._peak_in_flight = in_flight
        if in_flight <= self.limit:  # else admitted under a higher limit, since given up
            self._window.append(latency_s)
        now = self._clock()
        # A slow answer at the limit closes the window at once, so the level is judged on it now
        # rather than after a window's worth of answers at a level that may be past the knee.
        slow_at_limit = (self._peak_in_flight >= self.limit and self.noload_s > 0
                         and latency_s > self.noload_s * self.settings.tolerance)
        if slow_at_limit or now - self._window_start >= self.settings.window_s:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        peak, window = self._peak_in_flight, self._window
        self._window, self._peak_in_flight, self._window_start = [], 0, now
        if peak >= self.limit:  # the limit was reached: the window's answers describe it
            self._level.extend(window)
        if peak <= 1:  # nobody overlapped: these answers measure the no-load latency as it is now
            self._alone.extend(window)
            if len(self._alone) >= self.settings.tail_samples:
                self.noload_s = tail_of(self._alone)
                self._next_probe = now + self._probe_gap_s
        elif not self.noload_s or now >= self._next_probe:
            self._start_probe()
            return
        if self.noload_s:
            self._judge(now)

    def _judge(self, now: float) -> None:
        """The current level's verdict, if its answers give one yet."""
        level, target = self._level, self.noload_s * self.settings.tolerance
        if len(level) < self.settings.min_samples:
            return
        slow = sum(1 for latency in level if latency > target)
        allowed = TAIL_SHARE * len(level)
        if 2 * slow > len(level):  # the very median is past the target: cut in proportion at once
            self._shrink(target / sorted(level)[len(level) // 2], now)
        elif slow >= allowed + 2:
            # Judged as the answers come (a sequential test), not after a fixed count: every slow
            # answer of a level being tried counts against the p99 of all answers, so a level
            # that is clearly past the knee is left after a few of them. A p99 from a few hundred
            # answers is noisy: step down by at most a quarter.
            self._shrink(max(0.75, target / tail_of(level)), now)
        elif len(level) >= self.settings.tail_samples:
            if slow <= allowed:
                self._grow(now)
            elif len(level) >= 4 * self.settings.tail_samples:
                self._shrink(max(0.75, target / tail_of(level)), now)

    def _grow(self, now: float) -> None:
        self._level = []
        if self._ceiling is not None and self.limit >= self._ceiling:
            self._ceiling, self._backoff_s = None, 0.0  # the level that failed now holds
        grown = min(self.cap, self.limit + max(1, self.limit // 8))
        blocked = self._ceiling is not None and grown >= self._ceiling and now < self._retry_at
        self._grown = grown > self.limit and not blocked
        if self._grown:
            self.limit = grown

    def _shrink(self, gradient: float, now: float) -> None:
        self._level = []
        if self._grown:  # the step just taken went past the knee: remember it, back off before retrying
            self._ceiling = self.limit
            self._backoff_s = min(self.settings.max_backoff_s, max(20 * self.settings.window_s, 2 * self._backoff_s))
            self._retry_at = now + self._backoff_s
        self._grown = False
        self.limit = max(self.floor, min(self.limit - 1, int(self.limit * max(0.25, gradient))))

    def _start_probe(self) -> None:
        self._probing = True
        self._probe_taken = 0
        self._alone.clear()
        # The first probe stops at what a p99 needs, so a cold start spends little time at one
        # request; the later ones (1 s after it, then less and less often) take the full count.
        self._probe_wanted = self.settings.probe_samples if self.noload_s else self.settings.tail_samples

    def _end_probe(self) -> None:
        self._probing = False
        self.noload_s = tail_of(self._alone)
        self._window, self._peak_in_flight = [], 0
        self._window_start = now = self._clock()
        self._next_probe = now + self._probe_gap_s
        self._probe_gap_s = min(self.settings.probe_interval_s, 2 * self._probe_gap_s)
        self._judge(now)  # what the level did before the probe (a cold start at ``initial``) counts now
