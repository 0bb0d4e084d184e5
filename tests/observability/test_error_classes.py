"""Answers counted by class, the status page's sign-in probe not counted, admission limits exported.

A real in-process server with authentication on: the page's credential-less probe (marked with
``X-Status-Probe``) leaves no trace in the error metrics, while every look-alike that could hide a
real failure (no marker, a wrong key, another path, an inference) is counted as an auth refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from obs_testlib import build_repository, eval_data, infer_body, settings_for, start_client, with_api_key
from prometheus_client.parser import text_string_to_metric_families

from appliance import appkeys

PROBE = {"X-Status-Probe": "1"}


@pytest.fixture
async def authed(digits_repository: Path, tmp_path: Path) -> AsyncIterator[tuple[TestClient, dict[str, str]]]:
    repository = build_repository(digits_repository, tmp_path / "models")
    state = tmp_path / "state"
    state.mkdir()
    settings, key = with_api_key(settings_for(repository, state), state)
    client = await start_client(settings)
    yield client, {"Authorization": f"Bearer {key}"}
    await client.close()


async def _samples(client: TestClient, auth: dict[str, str], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one series by labels; readiness polls while the server started (503) left out."""
    text = await (await client.get("/metrics", headers=auth)).text()
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name and s.labels.get("status") != "503"}


async def _status_when(client: TestClient, auth: dict[str, str], done: Any) -> dict[str, Any]:
    """The status document once the history has sampled what ``done`` waits for."""
    for _ in range(100):
        doc = await (await client.get("/v2/status", headers=auth)).json()
        if done(doc):
            return doc
        await asyncio.sleep(0.1)
    raise AssertionError(f"status never showed the expected figures: {doc['totals']}")


async def test_probe_is_not_counted_and_nothing_else_hides(authed: tuple[TestClient, dict[str, str]],
                                                         digits_repository: Path) -> None:
    client, auth = authed
    assert (await client.get("/v2/status", headers=PROBE)).status == 401
    assert await _samples(client, auth, "appliance_http_errors_total") == {}

    wrong = {**PROBE, "Authorization": "Bearer not-a-key"}
    look_alikes = [client.get("/v2/status"), client.get("/v2/status", headers=wrong),
                   client.get("/v2/status", headers={**PROBE, "X-API-Key": "not-a-key"}),
                   client.get("/metrics", headers=PROBE),
                   client.post("/v2/models/digits/infer", headers=PROBE, json={"inputs": []})]
    for request in look_alikes:
        assert (await request).status == 401
    x, _ = eval_data(digits_repository)
    assert (await client.post("/v2/models/digits/infer", headers=auth, json=infer_body(x[:2]))).status == 200
    assert (await client.post("/v2/models/digits/infer", headers=auth, json={"inputs": []})).status == 400

    errors = await _samples(client, auth, "appliance_http_errors_total")
    assert errors == {(("class", "auth"), ("status", "401")): 5.0,
                      (("class", "client_error"), ("status", "400")): 1.0}
    doc = await _status_when(client, auth, lambda d: d["totals"]["auth_failures"] == 5)
    assert doc["totals"] | {"cache_hits": 0, "cache_misses": 0} == {
        "ok": 1, "errors": 0, "rejected": 0, "client_errors": 1, "auth_failures": 5, "cache_hits": 0,
        "cache_misses": 0}
    series = doc["series"]
    assert max(r for r in series["auth_failure_rate"] if r is not None) > 0
    assert max(r for r in series["client_error_rate"] if r is not None) > 0
    assert all(r in (None, 0) for r in series["error_rate"])


async def test_admission_limit_and_noload_latency_are_exported(authed: tuple[TestClient, dict[str, str]],
                                                                digits_repository: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What the service's ``admission_stats()`` reports (adaptive admission adds ``limit``,
    ``noload_ms`` and ``adaptive``) reaches /metrics and the status JSON."""
    client, auth = authed
    x, _ = eval_data(digits_repository)
    assert (await client.post("/v2/models/digits/infer", headers=auth, json=infer_body(x[:2]))).status == 200
    service = client.server.app[appkeys.SERVICE]
    reported = service.admission_stats

    def adaptive() -> dict[str, dict[str, Any]]:
        return {model: {**stats, "limit": 7, "noload_ms": 1.25, "adaptive": True}
                for model, stats in reported().items()}

    monkeypatch.setattr(service, "admission_stats", adaptive)
    limits = await _samples(client, auth, "appliance_admission_limit")
    noload = await _samples(client, auth, "appliance_admission_noload_latency_seconds")
    assert limits == {(("model", "digits"),): 7.0}
    assert noload == {(("model", "digits"),): pytest.approx(0.00125)}
    doc = await (await client.get("/v2/status", headers=auth)).json()
    assert doc["admission"]["digits"] | {"queued_bytes": 0} == {
        "in_flight": 0, "waiting": 0, "queued_bytes": 0, "limit": 7, "noload_ms": 1.25, "adaptive": True}
