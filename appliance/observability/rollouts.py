"""Scrape-time metrics of the rollouts: traffic split, what the candidate measured, rollbacks.

Read from the router when Prometheus asks (nothing on the request path): the share each active
rollout sends to (or mirrors to) its candidate, the candidate's answers and errors, its agreement
with the stable version, the requests mirrored and shed, and how many rollouts were rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.lifecycle.router import Router


class RolloutCollector:
    def __init__(self, router: Router) -> None:
        self._router = router

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "stable", "candidate", "mode"]
        share = GaugeMetricFamily("appliance_rollout_share", "Share of requests naming no version sent (canary, "
                                  "A/B) or mirrored (shadow) to the candidate; 0 once the rollout ended.",
                                  labels=labels)
        answers = CounterMetricFamily("appliance_rollout_candidate_answers", "Answers the candidate gave.",
                                      labels=labels)
        errors = CounterMetricFamily("appliance_rollout_candidate_errors", "Candidate answers that failed.",
                                     labels=labels)
        agreement = GaugeMetricFamily("appliance_rollout_agreement", "Share of compared rows where the candidate "
                                      "agrees with stable (top-1 for classifiers, cosine >= 0.99 otherwise).",
                                      labels=labels)
        diff = GaugeMetricFamily("appliance_rollout_max_abs_difference", "Largest absolute difference seen "
                                 "between the candidate's and the stable version's outputs.", labels=labels)
        mirrored = CounterMetricFamily("appliance_rollout_mirrored", "Requests mirrored for comparison.",
                                       labels=labels)
        shed = CounterMetricFamily("appliance_rollout_mirror_shed", "Mirrors skipped because the server was busy.",
                                   labels=labels)
        rolled = GaugeMetricFamily("appliance_rollout_rolled_back", "1 when the model's last rollout was rolled "
                                   "back (automatically or by an operator).", labels=["model"])
        for model, rollout in sorted(self._router.store.all().items()):
            rollout = self._router.rollout(model) or rollout
            values = [model, str(rollout.stable), str(rollout.candidate), rollout.mode]
            share.add_metric(values, rollout.share if rollout.active else 0.0)
            rolled.add_metric([model], 1 if rollout.state == "rolled_back" else 0)
            stats = self._router.stats(model)
            if stats is None:
                continue
            answers.add_metric(values, stats.candidate_answers)
            errors.add_metric(values, stats.candidate_errors)
            mirrored.add_metric(values, stats.mirrored)
            shed.add_metric(values, stats.shed)
            diff.add_metric(values, stats.max_abs_diff)
            if stats.agreement is not None:
                agreement.add_metric(values, stats.agreement)
        yield from (share, answers, errors, agreement, diff, mirrored, shed, rolled)
