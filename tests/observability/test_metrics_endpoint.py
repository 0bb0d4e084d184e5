"""/metrics against a real in-process server after real traffic: it parses with prometheus_client's
parser, follows the naming conventions, carries the expected series, and docs/metrics.md lists them all."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from obs_testlib import build_repository, drive_traffic, eval_data, settings_for, start_client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(digits_repository: Path, tmp_path: Path) -> AsyncIterator[TestClient]:
    repository = build_repository(digits_repository, tmp_path / "models")
    client = await start_client(settings_for(repository, tmp_path / "state"))
    yield client
    await client.close()


def _samples(text: str) -> tuple[dict[str, str], list[Sample]]:
    types, samples = {}, []
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples.extend(family.samples)
    return types, samples


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert found, f"no sample {name} {labels}"
    return sum(found)


async def test_metrics_after_traffic(client: TestClient, digits_repository: Path) -> None:
    x, _ = eval_data(digits_repository)
    counts = await drive_traffic(client, x)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    types, samples = _samples(await response.text())

    ok = _value(samples, "appliance_requests_total", status="200")
    assert ok == counts["ok"]
    assert _value(samples, "appliance_requests_total", model="digits", version="2", protocol="rest", status="200") == 20
    assert _value(samples, "appliance_requests_total", status="400") == 1
    assert _value(samples, "appliance_http_errors_total", status="404") >= 1
    assert counts["rejected"] > 0
    assert _value(samples, "appliance_rejections_total", model="tight", reason="overloaded") == counts["rejected"]
    assert _value(samples, "appliance_requests_total", model="tight", status="429") == counts["rejected"]
    assert _value(samples, "appliance_cache_lookups_total", model="digits", result="hit") == 3
    assert _value(samples, "appliance_request_duration_seconds_count", model="digits", version="1") == 23
    assert _value(samples, "appliance_request_duration_seconds_bucket", model="digits", version="1", le="+Inf") == 23
    assert _value(samples, "appliance_inference_duration_seconds_count", model="digits", version="2") == 20
    # Every request that got an admission slot: it is taken before the body is read, so the cache hits
    # and the malformed request (refused by validation, after admission) waited for one too.
    assert _value(samples, "appliance_queue_wait_seconds_count", model="digits") == 44
    assert _value(samples, "appliance_batch_size_sum", model="digits", version="2") == 160
    assert _value(samples, "appliance_in_flight_requests", model="digits") == 0
    assert _value(samples, "appliance_queue_depth", model="tight") == 0
    assert _value(samples, "appliance_model_ready", model="digits", version="2", device="CPU",
                  runtime="onnxruntime", precision="fp32", state="READY") == 1
    assert _value(samples, "appliance_ready") == 1
    assert _value(samples, "appliance_audit_enabled") == 0
    assert _value(samples, "process_resident_memory_bytes") > 10e6
    assert _value(samples, "process_cpu_seconds_total") > 0
    available = _value(samples, "appliance_system_memory_available_bytes")
    assert _value(samples, "appliance_system_memory_total_bytes") > available > 0
    assert _value(samples, "appliance_cache_entries") >= 1

    # Prediction quality: every served row of each digits version is in the confidence histogram.
    assert _value(samples, "appliance_prediction_confidence_count", model="digits", version="2") == 160
    assert _value(samples, "appliance_prediction_entropy_count", model="digits", version="2") == 160
    # Version 2 has the optimizer's baseline and 160 in-distribution rows: a small PSI; version 1 has none.
    assert _value(samples, "appliance_prediction_drift_psi", model="digits", version="2") < 0.1
    assert not [s for s in samples if s.name == "appliance_prediction_drift_psi" and s.labels["version"] == "1"]
    assert _value(samples, "appliance_input_mean_shift", model="digits", version="2") < 0.5

    # Conventions: counters end in _total (the parser strips it from the family name), histograms
    # named for their unit, everything prefixed appliance_ or process_.
    for name, kind in types.items():
        assert re.fullmatch(r"(appliance|process)_[a-z0-9_]+", name), name
        if kind == "histogram" and ("duration" in name or "wait" in name):
            assert name.endswith("_seconds"), name


async def test_metrics_are_documented(client: TestClient, digits_repository: Path) -> None:
    """docs/metrics.md lists every family /metrics exports (after traffic, so all are present)."""
    await drive_traffic(client, eval_data(digits_repository)[0])
    types, _ = _samples(await (await client.get("/metrics")).text())
    documented = set(re.findall(r"^\| `([a-z0-9_]+)", (ROOT / "docs" / "metrics.md").read_text(), re.M))
    exported = {name + ("_total" if kind == "counter" else "") for name, kind in types.items()}
    assert exported - documented == set(), "undocumented series"
    # The audit writer's series appear only when audit is enabled (it is off here).
    assert {n for n in documented - exported if not n.startswith("appliance_audit_")} == set()


def test_loop_histogram_exposes_what_prometheus_client_would() -> None:
    """The lock-free request-path histogram buckets values exactly like prometheus-client."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from appliance.metrics import LATENCY_BUCKETS, Metrics

    values = [0.0, 0.0005, 0.00051, 0.002, 0.0049, 0.005, 0.3, 10.0, 11.0, 1e-9]
    reference_registry = CollectorRegistry()
    reference = Histogram("appliance_request_duration_seconds", "Inference request latency inside the server.",
                          ["model", "version"], buckets=LATENCY_BUCKETS, registry=reference_registry)
    metrics = Metrics()
    child = metrics.for_version("digits", "1").request_seconds
    for value in values:
        reference.labels("digits", "1").observe(value)
        child.observe(value)

    def lines(registry: CollectorRegistry) -> set[str]:
        return {line for line in generate_latest(registry).decode().splitlines()
                if line.startswith("appliance_request_duration_seconds_")}

    assert lines(metrics.registry) == lines(reference_registry)
