"""The router: which version answers a request that names none, and whether a rollout holds.

``decide`` runs on the event loop for every such request: one watched-file read (a dict lookup
between stats), one random draw or one hash. ``observe`` and ``compared`` collect, per active
rollout, what the automatic rollback weighs: the candidate's error rate, its p99 latency against
the stable version's, and its agreement with the stable version's answers (measured on mirrored
requests: the candidate's in shadow mode, the stable version's under canary and A/B). Once
``min_samples`` candidate answers are in, a breached threshold sends all traffic back to stable,
records why (``on_event``: audit log and log line) and persists it in the rollout file.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.lifecycle.agreement import Comparison
from appliance.lifecycle.rollout import Rollout, RolloutStore

log = logging.getLogger("appliance.rollout")
#: Told the rolled-back rollout (its last history event says who and why) so it is audited and saved.
RolloutEvent = Callable[[Rollout], None]
_LATENCIES = 2048  # the most recent answers per arm that the p99 comparison looks at


@dataclass
class RolloutStats:
    """What one active rollout has seen so far (reset when its definition changes)."""

    candidate_answers: int = 0
    candidate_errors: int = 0
    stable_latency: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))
    candidate_latency: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))
    compared_rows: int = 0
    agreed_rows: int = 0
    cosine_sum: float = 0.0
    max_abs_diff: float = 0.0
    mirrored: int = 0
    shed: int = 0

    @property
    def agreement(self) -> float | None:
        return self.agreed_rows / self.compared_rows if self.compared_rows else None

    def snapshot(self) -> dict[str, Any]:
        return {"candidate_answers": self.candidate_answers, "candidate_errors": self.candidate_errors,
                "agreement": self.agreement, "compared_rows": self.compared_rows,
                "mean_cosine": self.cosine_sum / self.compared_rows if self.compared_rows else None,
                "max_abs_diff": self.max_abs_diff, "mirrored": self.mirrored, "shed": self.shed,
                "stable_p99_ms": _p99_ms(self.stable_latency), "candidate_p99_ms": _p99_ms(self.candidate_latency)}


@dataclass(frozen=True, slots=True)
class Decision:
    version: int
    route: str  # "stable" | "canary" (the candidate answers)
    compare: int | None  # a version to mirror this request to, answers only compared
    #: The active rollout's tallies, found once here so that what the request adds to them later
    #: (its latency, a shed mirror) costs no second look-up of the rollout; None when none is active.
    stats: RolloutStats | None = None


class Router:
    def __init__(self, store: RolloutStore, on_event: RolloutEvent | None = None) -> None:
        self.store = store
        self._on_event = on_event
        self._stats: dict[str, tuple[Rollout, RolloutStats]] = {}
        self._overrides: dict[str, Rollout] = {}  # rolled back here, until the file says so too

    def rollout(self, model: str) -> Rollout | None:
        rollout = self.store.get(model)
        override = self._overrides.get(model)
        if override is not None:
            if rollout is None or rollout.state != "active" or rollout.history == override.history:
                self._overrides.pop(model, None)
            else:
                return override
        return rollout

    def decide(self, model: str, route_keys: Any = None) -> Decision | None:
        """For a request that names no version; None: no rollout, the newest servable version answers."""
        rollout = self.rollout(model)
        if rollout is None:
            return None
        if not rollout.active:
            return Decision(rollout.stable, "stable", None)
        stats = self._held(model, rollout)
        if rollout.mode == "shadow":
            mirror = rollout.candidate if random.random() < rollout.share else None
            return Decision(rollout.stable, "stable", mirror, stats)
        if self._to_candidate(rollout, route_keys):
            return Decision(rollout.candidate, "canary", rollout.stable, stats)
        return Decision(rollout.stable, "stable", None, stats)

    @staticmethod
    def _to_candidate(rollout: Rollout, route_keys: Any) -> bool:
        key = route_keys.get(rollout.sticky_header) if rollout.mode == "ab" and route_keys is not None else None
        if not key:
            return random.random() < rollout.share
        digest = hashlib.blake2b(f"{rollout.model}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < rollout.share

    # --- what the automatic rollback weighs ----------------------------------------------
    def stats(self, model: str) -> RolloutStats | None:
        rollout = self.rollout(model)
        if rollout is None or not rollout.active:
            return None
        return self._held(model, rollout)

    def _held(self, model: str, rollout: Rollout) -> RolloutStats:
        held = self._stats.get(model)
        if held is None or held[0] is not rollout:  # the watched file parses a changed file into new objects
            held = self._stats[model] = (rollout, RolloutStats())
        return held[1]

    def observe(self, model: str, decision: Decision, latency_s: float, failed: bool) -> None:
        """One answered request that ``decision`` routed: its latency, and whether it failed."""
        stats = decision.stats
        if stats is None:
            return
        if decision.route == "canary":
            stats.candidate_answers += 1
            stats.candidate_errors += failed
            stats.candidate_latency.append(latency_s)
            self._evaluate(model, stats)
        else:
            stats.stable_latency.append(latency_s)

    def observe_mirrored(self, model: str, stats: RolloutStats, requests: int, failed: bool) -> None:
        """Shadow mode: the candidate answered ``requests`` mirrored requests in one batch. Their
        latency is a batch's, not a request's, so the p99 comparison applies to canary and A/B only.
        ``stats`` are those of the rollout the requests were mirrored under (``Decision.stats``)."""
        stats.candidate_answers += requests
        stats.candidate_errors += requests if failed else 0
        self._evaluate(model, stats)

    def compared(self, model: str, stats: RolloutStats, comparison: Comparison, requests: int) -> None:
        """A window of ``requests`` mirrored requests was answered by both versions and compared."""
        stats.mirrored += requests
        stats.compared_rows += comparison.rows
        stats.agreed_rows += comparison.agreed
        stats.cosine_sum += comparison.cosine_sum
        stats.max_abs_diff = max(stats.max_abs_diff, comparison.max_abs_diff)
        self._evaluate(model, stats)

    @staticmethod
    def shed(stats: RolloutStats, requests: int = 1) -> None:
        """Mirrors skipped because the server was busy (one request's, or a whole window's)."""
        stats.shed += requests

    def _evaluate(self, model: str, stats: RolloutStats) -> None:
        rollout = self.rollout(model)
        if rollout is None or not rollout.active or self._held(model, rollout) is not stats:
            return  # e.g. a window mirrored under a rollout that has since changed: counted, decides nothing
        if stats.candidate_answers < rollout.thresholds.min_samples:
            return
        why = breach(rollout, stats)
        if why:
            self.roll_back(rollout, "automatic", why)

    def roll_back(self, rollout: Rollout, who: str, why: str) -> Rollout:
        """All traffic back to stable, at once in this process; the caller's store write follows."""
        rolled = rollout.with_event("rollback", who, why, state="rolled_back")
        self._overrides[rollout.model] = rolled
        log.warning("rollout rolled back", extra={"fields": {"model": rollout.model, "by": who, "why": why}})
        if self._on_event is not None:
            self._on_event(rolled)
        return rolled


def breach(rollout: Rollout, stats: RolloutStats) -> str:
    """Why the candidate fails its thresholds ('' when it does not)."""
    limits = rollout.thresholds
    error_rate = stats.candidate_errors / max(1, stats.candidate_answers)
    if error_rate > limits.max_error_rate:
        return f"candidate error rate {error_rate:.3f} > {limits.max_error_rate}"
    agreement = stats.agreement
    if agreement is not None and stats.compared_rows >= limits.min_samples and agreement < limits.min_agreement:
        return f"agreement with stable {agreement:.3f} < {limits.min_agreement}"
    stable, candidate = _p99_ms(stats.stable_latency), _p99_ms(stats.candidate_latency)
    if stable and candidate and len(stats.stable_latency) >= limits.min_samples \
            and candidate > limits.max_p99_ratio * stable:
        return f"candidate p99 {candidate:.2f} ms > {limits.max_p99_ratio} x stable p99 {stable:.2f} ms"
    return ""


def _p99_ms(latencies: deque[float]) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3)
