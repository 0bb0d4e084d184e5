"""The OpenAPI document says what the server enforces, in both directions.

schemathesis (4.x CLI) generates requests from ``/openapi.json`` and sends them to a real server
started as ``appliance serve``: schema-valid requests must not be refused for reasons the schema
could have stated, schema-invalid ones must be refused, no answer may be a 5xx or break the
documented responses. The codec cases below pin the refusals that used to slip through (an empty
input name was allowed by the schema and refused by the server; ``"parameters": []`` was refused
by the schema and accepted by the server).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, start_server, stop_server

from appliance.errors import InvalidInput
from appliance.protocol.codec import decode_request

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
#: ~15 s on two cores for 16 operations and every check; enough to reach each codec refusal.
MAX_EXAMPLES = 30
GOOD_INPUT: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.0]}


@pytest.fixture(scope="module")
def contract_server(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(digits_repository, tmp_path_factory.mktemp("contract-state"))
    yield server
    stop_server(server)


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(contract_server: ServerProcess,
                                                                   tmp_path: Path) -> None:
    # schemathesis writes its caches into the working directory: keep them out of the checkout.
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{contract_server.url}/openapi.json",
         "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--output-truncate", "true", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-8000:]
    selected = re.search(r"Selected:\s+(\d+)/(\d+)", report)
    tested = re.search(r"Tested:\s+(\d+)", report)
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    # Every operation but the five lifecycle ones schemathesis.toml disables (and says why) is tested.
    assert selected and tested and selected.group(1) == tested.group(1), report[-3000:]
    assert int(selected.group(2)) - int(selected.group(1)) == 5, report[-3000:]
    assert counts and int(counts.group(1)) == int(counts.group(2)) > 500, report[-3000:]
    assert contract_server.process.poll() is None
    # Not "Traceback": aiohttp logs one when it refuses schemathesis' capability probe (a NUL byte in
    # a header) with 400 before any handler runs. An exception escaping a handler logs this line:
    assert "unhandled error" not in contract_server.log()


def _decode(doc: dict[str, Any]) -> Any:
    return decode_request(json.dumps(doc).encode(), None, max_elements=1000)


@pytest.mark.parametrize("doc", [
    {"inputs": [{**GOOD_INPUT, "name": ""}]},
    {"inputs": [GOOD_INPUT], "parameters": []},
    {"inputs": [GOOD_INPUT], "parameters": 0},
    {"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": 1}},
    {"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": "yes"}},
    {"inputs": [{**GOOD_INPUT, "parameters": ""}]},
    {"inputs": [GOOD_INPUT], "outputs": [{"name": ""}]},
    {"inputs": [GOOD_INPUT], "outputs": [{"name": "probabilities", "parameters": []}]},
    {"inputs": [GOOD_INPUT], "outputs": [{"name": "probabilities", "parameters": {"binary_data": "no"}}]},
    {"inputs": [{**GOOD_INPUT, "datatype": "fp32"}]},
    {"inputs": [{**GOOD_INPUT, "shape": [-1, 2]}]},
    {"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "data"}]},
    {"inputs": [{**GOOD_INPUT, "parameters": {"binary_data_size": 8}}]},
])
def test_codec_refuses_what_the_schema_forbids(doc: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        _decode(doc)


def test_codec_accepts_the_nulls_the_schema_allows() -> None:
    request = _decode({"id": None, "parameters": None, "outputs": None,
                       "inputs": [{**GOOD_INPUT, "parameters": None}]})
    assert request.id is None and request.outputs is None and not request.binary_output
    request = _decode({"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": True},
                       "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}]})
    assert request.binary_output
    assert request.outputs is not None and request.outputs[0].binary is False


def _infer_status(server: ServerProcess, headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}]})
    request = urllib.request.Request(f"{server.url}/v2/models/digits/infer", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Cache-Control": "no-cache",
                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.parametrize(("value", "status"), [
    ("-5", 400), ("0", 400), ("nan", 400), ("inf", 400), ("soon", 400), ("60000", 200), ("2.5e4", 200)])
def test_request_timeout_header_is_a_positive_number(contract_server: ServerProcess, value: str,
                                                     status: int) -> None:
    """The schema says a number > 0; "-5" and "0" used to answer 504 (a server error for a client's
    mistake) and "nan" disabled the deadline."""
    assert _infer_status(contract_server, {"X-Request-Timeout-Ms": value}) == status
