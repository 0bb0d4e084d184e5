"""Property-based tests: malformed requests get 4xx (never 5xx) and the server stays healthy."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, start_server, stop_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import InvalidInput
from appliance.protocol.codec import decode_request

DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "fp32", "", "COMPLEX"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30,
)
shapes = st.lists(st.integers(-2, 2**40), max_size=4) | st.lists(st.integers(0, 70), min_size=1, max_size=3)
tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "x", ""]) | st.text(max_size=5), "datatype": st.sampled_from(DATATYPES),
     "shape": shapes | json_values},
    optional={"data": st.lists(st.floats(allow_nan=False, width=32) | st.integers(-300, 300) | st.text(max_size=3),
                               max_size=130) | json_values,
              "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]),
                                            st.integers(-5, 10**6) | json_values, max_size=2)},
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={"id": json_values, "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=14)}),
                                                     max_size=2) | json_values,
              "parameters": st.dictionaries(st.sampled_from(["timeout", "priority", "binary_data_output"]),
                                            json_values, max_size=3)},
) | json_values


@given(st.binary(max_size=300), st.none() | st.integers(-10, 400))
@settings(max_examples=300, deadline=None)
def test_codec_refuses_random_bytes_with_invalid_input(body: bytes, header_length: int | None) -> None:
    with contextlib.suppress(InvalidInput):
        decode_request(body, header_length, max_elements=10_000)


@given(requests, st.binary(max_size=64))
@settings(max_examples=400, deadline=None)
def test_codec_accepts_or_refuses_structured_requests_cleanly(doc: Any, tail: bytes) -> None:
    header = json.dumps(doc).encode()
    for body, length in ((header, None), (header + tail, len(header))):
        with contextlib.suppress(InvalidInput):
            decode_request(body, length, max_elements=10_000)


@pytest.mark.parametrize(("datatype", "value"), [("FP16", 65520), ("FP32", 1e39)])
def test_a_number_beyond_a_float_type_is_refused_not_made_infinite(datatype: str, value: float) -> None:
    """Found by the test above: 65520 as FP16 became inf with a RuntimeWarning."""
    doc = {"inputs": [{"name": "input", "shape": [1], "datatype": datatype, "data": [value]}]}
    with pytest.raises(InvalidInput, match="out of range"):
        decode_request(json.dumps(doc).encode(), None, max_elements=10_000)


@pytest.fixture(scope="module")
def fuzz_server(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(digits_repository, tmp_path_factory.mktemp("fuzz-state"))
    yield server
    stop_server(server)


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        payload = error.read()
        assert set(json.loads(payload)) == {"error"}, payload
        return error.code


@given(doc=requests, tail=st.binary(max_size=64), binary=st.booleans(),
       path=st.sampled_from(["/v2/models/digits/infer", "/v2/models/digits/versions/1/infer",
                             "/v2/models/digits/versions/x/infer"]))
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_server_answers_malformed_requests_with_4xx(fuzz_server: ServerProcess, doc: Any, tail: bytes,
                                                   binary: bool, path: str) -> None:
    header = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    body = header
    if binary:
        body = header + tail
        headers["Inference-Header-Content-Length"] = str(len(header))
    status = _post(fuzz_server.url + path, body, headers)
    assert status == 200 or 400 <= status < 500, status


def test_server_is_healthy_after_the_fuzzing(fuzz_server: ServerProcess) -> None:
    with urllib.request.urlopen(f"{fuzz_server.url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    assert fuzz_server.process.poll() is None
    assert "Traceback" not in fuzz_server.log()
