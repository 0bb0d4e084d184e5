"""The shipped Prometheus alert rules and Grafana dashboard: valid, and built only from series that
/metrics exports (docs/metrics.md, which another test keeps equal to the live exposition)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "model-appliance.json"
SERIES = re.compile(r"\b((?:appliance|process)_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_sum", "_count")


def _documented() -> set[str]:
    names = set(re.findall(r"^\| `([a-z0-9_]+)", (ROOT / "docs" / "metrics.md").read_text(), re.M))
    return names | {n + s for n in names for s in SUFFIXES}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (Debian package 'prometheus')")
def test_alert_rules_pass_promtool() -> None:
    subprocess.run(["promtool", "check", "rules", str(RULES)], check=True, capture_output=True)
    # Unit tests of the rules: each alert fires on the series it is meant for, with its annotations.
    subprocess.run(["promtool", "test", "rules", "alerts.test.yml"], check=True, capture_output=True, cwd=RULES.parent)


def test_alerts_cover_the_required_signals() -> None:
    text = RULES.read_text()
    names = set(re.findall(r"^\s+- alert: (\w+)", text, re.M))
    assert {"ApplianceP99LatencyHigh", "ApplianceErrorRateHigh", "ApplianceRejectionRateHigh",
            "ApplianceAuditWriterLagging", "ApplianceModelNotReady"} <= names
    assert set(SERIES.findall(text)) - _documented() == set()


def test_dashboard_loads_and_uses_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    expressions = [t["expr"] for p in panels for t in p["targets"]]
    assert all(expressions)
    used = {name for expr in expressions for name in SERIES.findall(expr)}
    assert used - _documented() == set()
    assert {"appliance_request_duration_seconds_bucket", "appliance_prediction_drift_psi",
            "appliance_audit_writer_lag_seconds", "appliance_model_ready"} <= used
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance", "model"}
