"""Per-principal request rate (token bucket) and per-address authentication-failure throttle.

Both are plain dicts touched only from the event loop (no locks), bounded so that a flood of
distinct principals or addresses cannot grow them without limit: when full, entries idle long
enough to be back at their initial state are dropped first, then the oldest.
"""

from __future__ import annotations

import time

_MAX_ENTRIES = 65536


class RateLimiter:
    """Token bucket: ``rate`` requests per second on average, bursts up to ``burst``."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float | None = None) -> float:
        """0 when a request may go; else the seconds until one token is back (Retry-After)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > _MAX_ENTRIES:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full]:
            del self._buckets[key]
        while len(self._buckets) > _MAX_ENTRIES:
            del self._buckets[next(iter(self._buckets))]


class FailureThrottle:
    """At most ``limit`` authentication failures per address in a fixed one-minute window;
    past it the address is refused (even with valid credentials) until the window ends, so
    guessing stops being free."""

    __slots__ = ("_windows", "limit", "window_s")

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def blocked_for(self, address: str, now: float | None = None) -> float:
        """Seconds this address must wait (0 = not blocked)."""
        entry = self._windows.get(address)
        if entry is None or self.limit <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        start, failures = entry
        if now - start >= self.window_s:
            del self._windows[address]
            return 0.0
        return start + self.window_s - now if failures >= self.limit else 0.0

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        start, failures = self._windows.get(address, (now, 0))
        if now - start >= self.window_s:
            start, failures = now, 0
        self._windows[address] = (start, failures + 1)
        if len(self._windows) > _MAX_ENTRIES:
            for key in [k for k, (s, _) in self._windows.items() if now - s >= self.window_s]:
                del self._windows[key]
            while len(self._windows) > _MAX_ENTRIES:
                del self._windows[next(iter(self._windows))]
