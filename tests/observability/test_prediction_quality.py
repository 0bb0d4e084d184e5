"""Prediction-quality signals on a real server: in-distribution traffic keeps the drift PSI low,
shifted inputs raise it past the alert threshold; the pure parts (PSI, logits) behave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from obs_testlib import build_repository, eval_data, infer_body, settings_for, start_client
from prometheus_client.parser import text_string_to_metric_families

from appliance.observability.quality import INPUT_SAMPLE, Baseline, VersionQuality, input_sample, psi


async def _gauge(client, name: str, version: str) -> float:  # type: ignore[no-untyped-def]
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("version") == version:
                return sample.value
    raise AssertionError(f"{name} missing for version {version}")


async def test_drift_rises_when_inputs_shift(digits_repository: Path, tmp_path: Path) -> None:
    repository = build_repository(digits_repository, tmp_path / "models")
    client = await start_client(settings_for(repository, tmp_path / "state", drift_window_rows=200))
    try:
        x, _ = eval_data(digits_repository)
        for i in range(0, 256, 32):
            assert (await client.post("/v2/models/digits/versions/2/infer", json=infer_body(x[i:i + 32]))).status == 200
        assert await _gauge(client, "appliance_prediction_drift_psi", "2") < 0.1
        assert await _gauge(client, "appliance_input_mean_shift", "2") < 0.5
        # Brightened images: a different input distribution and a collapsed class mix.
        shifted = np.clip(x[:32] + 8.0, 0, 16).astype(np.float32)
        for _ in range(8):
            assert (await client.post("/v2/models/digits/versions/2/infer", json=infer_body(shifted))).status == 200
        assert await _gauge(client, "appliance_prediction_drift_psi", "2") > 0.25
        assert await _gauge(client, "appliance_input_mean_shift", "2") > 0.5
        status = await (await client.get("/v2/status")).json()
        quality = {q["version"]: q for q in status["quality"] if q["model"] == "digits"}
        assert quality["2"]["psi"] > 0.25 and quality["2"]["has_baseline"]
        assert quality["2"]["window_rows"] >= 200
    finally:
        await client.close()


def test_psi_and_baseline_parsing() -> None:
    even = np.full(4, 0.25)
    assert psi(even, even) == 0.0
    assert psi(even, np.array([0.7, 0.1, 0.1, 0.1])) > 0.25
    assert Baseline.from_metrics(None) is None
    assert Baseline.from_metrics({"accuracy": {}}) is None
    parsed = Baseline.from_metrics({"baseline": {"class_distribution": [2, 2], "input_mean": 1, "input_std": 0.5}})
    assert parsed is not None and parsed.classes is not None
    assert parsed.classes.tolist() == [0.5, 0.5] and parsed.input_mean == 1.0


def test_large_inputs_are_sampled_and_still_measure_the_shift() -> None:
    """An image-sized input keeps only INPUT_SAMPLE strided values, and their moments still
    estimate the input's mean and spread (what the drift gauge compares with the baseline)."""
    rng = np.random.default_rng(3)
    state = VersionQuality("cnn", "1", "scores", Baseline(None, 0.0, 1.0), (), window_rows=64, fold_rows=1024)
    for _ in range(8):
        image = rng.normal(0.5, 2.0, (1, 3, 224, 224)).astype(np.float32)
        state.add(np.full((1, 10), 0.1, np.float32), image)
        assert state._pending_in[-1].size <= INPUT_SAMPLE and state._pending_in[-1].base is None
    state.fold()
    stats = state.input_stats()
    assert stats is not None
    mean, std = stats
    assert abs(mean - 0.5) < 0.05 and abs(std - 2.0) < 0.05
    assert abs((state.input_shift() or 0.0) - 0.5) < 0.05  # |mean − 0| in baseline std (1.0)
    assert input_sample(np.arange(10.0)).size == 10
