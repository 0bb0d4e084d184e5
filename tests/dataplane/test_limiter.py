"""The adaptive limit against a simulated server: it finds the concurrency where the latency tail
starts to grow, refuses to be talked up by a long overload, and never leaves its floor and cap."""

from __future__ import annotations

from appliance.dataplane.limiter import GradientLimit, LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(limiter: GradientLimit, clock: Clock, latency_at: object, seconds: float,
             offered: int = 256, tail_at: object = None) -> list[int]:
    """A closed loop of ``offered`` clients against a server whose latency depends on the number
    in flight: each step admits up to the limit and answers them all after that latency; with
    ``tail_at``, one answer in 50 takes that latency instead (a tail the median does not show)."""
    limits = []
    end = clock.now + seconds
    answered = 0
    while clock.now < end:
        in_flight = min(offered, limiter.effective)
        latency = latency_at(in_flight)  # type: ignore[operator]
        clock.now += latency
        for _ in range(in_flight):
            answered += 1
            slow = tail_at is not None and answered % 50 == 0
            limiter.observe(tail_at(in_flight) if slow else latency, in_flight)  # type: ignore[operator]
        limits.append(limiter.limit)
    return limits


def test_a_server_whose_latency_grows_with_concurrency_settles_near_the_knee() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=16, floor=1, cap=64), clock)
    # No gain from concurrency (one core, no batching): latency = 1 ms × requests in flight.
    limits = simulate(limiter, clock, lambda n: 0.001 * n, seconds=20)
    assert abs(limiter.noload_s - 0.001) < 1e-9
    assert max(limits[-50:]) <= 2  # 1.5 × no-load admits at most one more request than the floor


def test_a_tail_that_grows_before_the_median_stops_the_limit() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=16, floor=1, cap=64), clock)
    # The median stays flat at every level (batching hides it), but one answer in 50 waits behind
    # the others: 0.5 ms × in flight. Up to 3 in flight that tail is within 1.5 × no-load p99 (1 ms
    # at one request in flight); past it, 2 % of answers are slow, more than a p99 allows.
    limits = simulate(limiter, clock, lambda n: 0.0005, seconds=30,
                      tail_at=lambda n: max(0.001, 0.0005 * n))
    assert abs(limiter.noload_s - 0.001) < 1e-9
    settled = limits[len(limits) // 2:]
    assert max(settled) <= 4 and sum(1 for limit in settled if limit == 3) > 0.8 * len(settled)


def test_a_cold_start_leaves_the_initial_limit_within_its_first_windows() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=16, floor=1, cap=64), clock)
    simulate(limiter, clock, lambda n: 0.001 * n, seconds=0.5)
    assert limiter.limit <= 2


def test_a_batching_server_is_allowed_the_concurrency_that_costs_little_latency() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=16, floor=2, cap=64), clock)
    # Batching: latency stays flat to 32 in flight, then grows linearly; 1.5 × no-load is 48.
    limits = simulate(limiter, clock, lambda n: 0.002 * max(1.0, n / 32), seconds=20)
    assert min(limits[-50:]) >= 32 and max(limits[-50:]) <= 48 + 48 // 8


def test_the_limit_grows_only_when_it_is_reached() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=8, floor=1, cap=64), clock)
    simulate(limiter, clock, lambda n: 0.001, seconds=5, offered=4)  # light load: 4 clients
    assert limiter.limit == 8


def test_floor_and_cap_hold_and_the_probe_remeasures_no_load() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=4, floor=2, cap=6, probe_interval_s=1.0), clock)
    limits = simulate(limiter, clock, lambda n: 0.001, seconds=3)
    assert max(limits) == 6 and min(limits) >= 2
    # The model got three times slower: the next probe window, held at the floor, sees it.
    simulate(limiter, clock, lambda n: 0.003 * max(1.0, n / 2), seconds=3)
    assert abs(limiter.noload_s - 0.003) < 1e-9
    assert limiter.effective >= limiter.floor


def test_a_level_past_the_knee_is_left_after_a_few_slow_answers() -> None:
    clock = Clock()
    limiter = GradientLimit(LimitSettings(initial=1, floor=1, cap=64), clock)
    # One request at a time is fast; two at once double the latency (past 1.5 × no-load), so every
    # answer given at 2 in flight counts against the p99: the controller must leave that level
    # after a handful of them each time it tries it, not after a hundred.
    answers_at_two = 0
    end = 30.0
    while clock.now < end:
        in_flight = limiter.effective
        clock.now += 0.001 * in_flight
        for _ in range(in_flight):
            answers_at_two += in_flight == 2
            limiter.observe(0.001 * in_flight, in_flight)
    answered = 30.0 / 0.001  # about one answer per millisecond whatever the level
    assert answers_at_two < 0.002 * answered  # measured: 5 tries of 8 answers in 30 s
