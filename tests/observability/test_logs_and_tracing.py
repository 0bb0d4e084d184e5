"""Structured logs and W3C trace context against a real ``appliance serve`` process: request lines
carry ids and the trace id, lifecycle events are logged, and no payload or secret ever is."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from obs_testlib import start_subprocess_server

from appliance.observability.tracing import begin, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
DISTINCTIVE = 987654.5  # exact in float32; appears in no id, port or timestamp
SECRET_TEXT = "s3cr3t-payload-ZQX"
SECRET_TOKEN = "tok-SECRET-abc123"


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_logs_carry_ids_and_events_but_never_payloads(repository: Path, tmp_path: Path) -> None:
    process, url, log_path = start_subprocess_server(repository, tmp_path / "state",
                                                     {"APPLIANCE_SERVER_LOG_LEVEL": "DEBUG"})
    try:
        row = [DISTINCTIVE] + [3.0] * 63
        status, headers = _post(f"{url}/v2/models/digits/infer",
                                {"id": "req-1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                                            "data": row}]},
                                {"X-Request-ID": "rid-42", "traceparent": f"00-{TRACE_ID}-{PARENT}-01",
                                 "Authorization": f"Bearer {SECRET_TOKEN}"})
        assert status == 200
        assert headers["X-Request-ID"] == "rid-42"
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01") and span_id != PARENT
        strings = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [SECRET_TEXT] * 64}]}
        bad, _ = _post(f"{url}/v2/models/digits/infer", strings,
                       {"X-Request-ID": "rid-43", "traceparent": "not-a-traceparent"})
        assert bad == 400
    finally:
        process.terminate()
        process.wait(30)
    text = log_path.read_text()
    for secret in ("987654", SECRET_TEXT, SECRET_TOKEN):
        assert secret not in text, f"{secret!r} leaked into the logs"
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    by_id = {line.get("request_id"): line for line in lines if line.get("msg") == "request"}
    assert by_id["rid-42"]["trace_id"] == TRACE_ID
    assert by_id["rid-42"]["status"] == 200 and by_id["rid-42"]["model"] == "digits"
    assert by_id["rid-43"]["status"] == 400 and len(by_id["rid-43"]["trace_id"]) == 32
    assert by_id["rid-43"]["trace_id"] != TRACE_ID
    events = [line["msg"] for line in lines]
    for event in ("model loaded", "ready", "listening", "draining", "model unloaded", "stopped"):
        assert event in events, event
    loaded = next(line for line in lines if line["msg"] == "model loaded")
    assert loaded["device"] == "CPU" and loaded["precision"] == "fp32"


@pytest.mark.parametrize(("header", "valid"), [
    (f"00-{TRACE_ID}-{PARENT}-01", True),
    (f"00-{TRACE_ID}-{PARENT}-00", True),
    (f"01-{TRACE_ID}-{PARENT}-01-future", True),  # later versions may add fields
    (f"00-{TRACE_ID}-{PARENT}-01-extra", False),  # version 00 has exactly four
    (f"ff-{TRACE_ID}-{PARENT}-01", False),
    (f"00-{'0' * 32}-{PARENT}-01", False),
    (f"00-{TRACE_ID}-{'0' * 16}-01", False),
    (f"00-{TRACE_ID.upper()}-{PARENT}-01", False),
    (f"00-{TRACE_ID[:-1]}-{PARENT}-01", False),
    ("", False),
])
def test_traceparent_validation(header: str, valid: bool) -> None:
    assert (parse_traceparent(header) is not None) is valid
    trace = begin(header or None)
    assert len(trace.trace_id) == 32 and len(trace.span_id) == 16
    assert (trace.trace_id == TRACE_ID) is valid
    assert trace.parent_id == (PARENT if valid else "")


def test_server_imports_no_opentelemetry_by_default(tmp_path: Path) -> None:
    """The SDK is optional: building the app without an OTLP endpoint must not import it."""
    code = ("import sys; from appliance.app import create_app; from appliance.config import Settings; "
            "create_app(Settings().replace('audit', enabled=False)); "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    result = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            check=True)
    assert result.stdout.strip() == "False"
