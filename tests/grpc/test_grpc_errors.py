"""The REST suite's bad inputs, sent over gRPC, end with the right status codes; every datatype
round-trips raw and typed; the server stays ready throughout (real subprocess server)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServerProcess
from grpc_testlib import call, code_of, grpc_server
from server_testlib import publish_identity_model

from appliance.dataplane.tensors import TO_NUMPY
from appliance.errors import InvalidInput
from appliance.grpc.codec import CONTENTS_FIELD, decode_request
from appliance.grpc.protos import grpc_service_pb2 as pb

Tensor = pb.ModelInferRequest.InferInputTensor
MAX_MESSAGE = 1 << 20
VALUES = {
    "BOOL": [True, False, True], "UINT8": [0, 7, 255], "UINT16": [0, 1, 65535], "UINT32": [0, 1, 2**32 - 1],
    "UINT64": [0, 1, 2**63], "INT8": [-128, 0, 127], "INT16": [-5, 0, 5], "INT32": [-(2**31), 0, 7],
    "INT64": [-(2**63), 0, 2**62], "FP16": [0.5, -1.0, 2.0], "FP32": [0.25, -3.5, 1e10],
    "FP64": [1e-300, 2.5, -7.0], "BYTES": ["héllo", "", "x y"],
}


@pytest.fixture(scope="module")
def served(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("grpc-errors")
    publish_identity_model(tmp / "models")
    with grpc_server(digits_repository, tmp, env={"APPLIANCE_GRPC_MAX_MESSAGE_BYTES": str(MAX_MESSAGE)}) as server:
        yield server


@pytest.fixture
def channel(served: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        yield channel


def _raw(*tensors: tuple[str, str, list[int], bytes], model: str = "digits", **extra: Any) -> pb.ModelInferRequest:
    inputs = [Tensor(name=n, datatype=d, shape=s) for n, d, s, _ in tensors]
    return pb.ModelInferRequest(model_name=model, inputs=inputs, raw_input_contents=[b for *_, b in tensors], **extra)


def _typed(name: str, datatype: str, shape: list[int], field: str, values: list[Any]) -> pb.ModelInferRequest:
    tensor = Tensor(name=name, datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return pb.ModelInferRequest(model_name="digits", inputs=[tensor])


ROW = np.zeros((1, 64), np.float32).tobytes()
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES = [
    (_raw(("nope", "FP32", [1, 64], ROW)), INVALID, "no input 'nope'"),
    (_raw(("input", "FP64", [1, 64], ROW * 2)), INVALID, "datatype"),
    (_typed("input", "FP32", [1, 64], "fp32_contents", [0.0] * 63), INVALID, "needs 64"),
    (_raw(("input", "FP32", [1, 63], ROW[:252])), INVALID, "dims"),
    (_typed("input", "FP32", [1, 64], "int_contents", [0] * 64), INVALID, "does not match datatype"),
    (_raw(("input", "FP32", [65, 64], ROW * 65)), INVALID, "max_batch"),
    (_raw(("input", "FP32", [100000, 100000], b"")), INVALID, "limit"),
    (_raw(("input", "FP32", [1, -64], b"")), INVALID, "negative"),
    (_raw(("input", "WHAT", [1, 64], ROW)), INVALID, "datatype"),
    (pb.ModelInferRequest(model_name="digits"), INVALID, "non-empty"),
    (_raw(("input", "FP32", [1, 64], ROW), outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="zzz")]),
     INVALID, "unknown output"),
    (_raw(("input", "FP32", [1, 64], ROW[:100])), INVALID, "binary_data_size"),
    (pb.ModelInferRequest(model_name="digits", inputs=[Tensor(name="input", datatype="FP32", shape=[1, 64])],
                          raw_input_contents=[ROW, ROW]), INVALID, "raw_input_contents"),
    (_raw(("input", "FP32", [1, 64], ROW), parameters={"timeout": pb.InferParameter(string_param="x")}),
     INVALID, "timeout"),
    (_raw(("input", "FP32", [1, 64], ROW), model="unknown"), grpc.StatusCode.NOT_FOUND, "unknown"),
    (_raw(("input", "FP32", [1, 64], ROW), model_version="9"), grpc.StatusCode.NOT_FOUND, "version"),
    (_raw(("input", "FP32", [4096, 64], ROW * 4096)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]


@pytest.mark.parametrize(("request_", "code", "fragment"), CASES)
def test_bad_requests_get_the_right_status(channel: grpc.Channel, request_: pb.ModelInferRequest,
                                           code: grpc.StatusCode, fragment: str) -> None:
    got, details = code_of(channel, "ModelInfer", request_)
    assert got == code and fragment in details, details
    assert call(channel, "ServerReady", pb.ServerReadyRequest()).ready  # still serving


def test_metadata_errors_and_load_refusals(channel: grpc.Channel) -> None:
    assert code_of(channel, "ModelMetadata", pb.ModelMetadataRequest(name="unknown"))[0] == grpc.StatusCode.NOT_FOUND
    load = pb.RepositoryModelLoadRequest(model_name="digits", parameters={"config": pb.ModelRepositoryParameter(
        string_param="{}")})
    assert code_of(channel, "RepositoryModelLoad", load)[0] == INVALID
    unimplemented = channel.unary_unary("/inference.GRPCInferenceService/SystemSharedMemoryStatus",
                                        request_serializer=lambda m: m, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as caught:
        unimplemented(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _identity_request() -> pb.ModelInferRequest:
    inputs, raw = [], []
    for datatype, values in VALUES.items():
        inputs.append(Tensor(name=f"in_{datatype.lower()}", datatype=datatype, shape=[3]))
        if datatype == "BYTES":
            raw.append(b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values))
        else:
            raw.append(np.asarray(values, dtype=TO_NUMPY[datatype]).tobytes())
    return pb.ModelInferRequest(model_name="identity", inputs=inputs, raw_input_contents=raw)


def test_every_datatype_round_trips_raw(channel: grpc.Channel) -> None:
    response = call(channel, "ModelInfer", _identity_request())
    outputs = {o.name: (o, raw) for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
    for datatype, values in VALUES.items():
        tensor, raw = outputs[f"out_{datatype.lower()}"]
        assert tensor.datatype == datatype and list(tensor.shape) == [3]
        if datatype == "BYTES":
            assert raw == b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            assert np.frombuffer(raw, dtype=TO_NUMPY[datatype]).tolist() == values, datatype


def test_typed_contents_decode_to_every_datatype() -> None:
    """Typed ``contents`` (no server needed to check the codec's conversions; FP16 is raw-only)."""
    for datatype, values in VALUES.items():
        tensor = Tensor(name="x", datatype=datatype, shape=[3])
        if datatype == "FP16":
            with pytest.raises(InvalidInput, match="raw_input_contents"):
                decode_request(pb.ModelInferRequest(inputs=[tensor]), 1000)
            continue
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(
            [v.encode() for v in values] if datatype == "BYTES" else values)
        (decoded,) = decode_request(pb.ModelInferRequest(inputs=[tensor]), 1000).inputs
        expected = [v.encode() for v in values] if datatype == "BYTES" else values
        assert decoded.data.dtype == TO_NUMPY[datatype] and decoded.data.tolist() == expected, datatype
    narrow = Tensor(name="x", datatype="INT8", shape=[1], contents=pb.InferTensorContents(int_contents=[300]))
    with pytest.raises(InvalidInput, match="out of range"):
        decode_request(pb.ModelInferRequest(inputs=[narrow]), 1000)


def test_typed_and_raw_inputs_give_the_same_answer(channel: grpc.Channel) -> None:
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    raw = call(channel, "ModelInfer", _raw(("input", "FP32", [2, 64], x.tobytes())))
    typed = call(channel, "ModelInfer", _typed("input", "FP32", [2, 64], "fp32_contents", x.ravel().tolist()))
    assert raw.raw_output_contents == typed.raw_output_contents
