"""``ModelInferRequest`` ⇄ the data plane's tensors.

Inputs arrive either all in ``raw_input_contents`` (what ``tritonclient.grpc`` and perf_analyzer
send: little-endian bytes, BYTES elements each prefixed by a 4-byte little-endian length, the
binary extension's layout, decoded by the REST codec's own function) or each in its typed
``contents`` field. As in the REST codec, a declared shape is checked against
``limits.max_tensor_elements`` before anything is allocated and the data must hold exactly
``prod(shape)`` elements; every failure is an :class:`InvalidInput` (INVALID_ARGUMENT).
Outputs always go out in ``raw_output_contents``, which is what Triton's clients read.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from appliance.dataplane.tensors import TO_NUMPY, InferInput, InferRequest, InferResponse, RequestedOutput, from_numpy
from appliance.errors import InvalidInput, LimitExceeded
from appliance.grpc.protos import grpc_service_pb2 as pb
from appliance.protocol.codec import binary_tensor

#: Datatype → the typed field of ``InferTensorContents`` that carries it (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_NARROW = ("UINT8", "UINT16", "INT8", "INT16")  # carried in 32-bit fields: range-checked
_LENGTH = struct.Struct("<I")


def decode_request(message: pb.ModelInferRequest, max_elements: int) -> InferRequest:
    """The request's tensors as numpy arrays, its requested outputs and parameters."""
    if not message.inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(f"raw_input_contents holds {len(raw)} tensors for {len(message.inputs)} inputs: "
                           "send every input raw, or none")
    inputs: list[InferInput] = []
    seen: set[str] = set()
    for index, tensor in enumerate(message.inputs):
        decoded = _decode_input(tensor, raw[index] if raw else None, max_elements)
        if decoded.name in seen:
            raise InvalidInput(f"input '{decoded.name}' given twice")
        seen.add(decoded.name)
        inputs.append(decoded)
    outputs = [RequestedOutput(o.name) for o in message.outputs] or None
    return InferRequest(inputs=inputs, id=message.id or None, outputs=outputs,
                        parameters=parameters_of(message.parameters) if message.parameters else {})


def parameters_of(parameters: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict (what ``apply_parameters`` reads)."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, kind) if kind else None
    return out


def _decode_input(tensor: pb.ModelInferRequest.InferInputTensor, chunk: bytes | None,
                  max_elements: int) -> InferInput:
    name, datatype = tensor.name, tensor.datatype
    if not name:
        raise InvalidInput("each input needs a non-empty 'name'")
    if datatype not in TO_NUMPY:
        raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    if count > max_elements:
        raise LimitExceeded(f"input '{name}': shape {list(shape)} holds {count} elements, over the limit of "
                            f"{max_elements}")
    if chunk is not None:
        if tensor.HasField("contents") and tensor.contents.ListFields():
            raise InvalidInput(f"input '{name}': give either contents or raw_input_contents, not both")
        return InferInput(name, datatype, shape, binary_tensor(name, datatype, shape, count, memoryview(chunk)))
    return InferInput(name, datatype, shape, _typed(name, datatype, shape, count, tensor.contents))


def _typed(name: str, datatype: str, shape: tuple[int, ...], count: int,
           contents: pb.InferTensorContents) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    used = [f.name for f, _ in contents.ListFields()]
    if used and used != [field]:
        raise InvalidInput(f"input '{name}': data in {', '.join(used)} does not match datatype {datatype}")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(f"input '{name}': shape {list(shape)} needs {count} elements, data has {len(values)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = TO_NUMPY[datatype]
    if datatype in _NARROW:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(f"input '{name}': values out of range for {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    """Every output in ``raw_output_contents``, in the order of ``outputs``."""
    tensors, raw = [], []
    for name, array in response.outputs.items():
        datatype = from_numpy(array.dtype)
        tensors.append(pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=array.shape))
        raw.append(_bytes_elements(array) if datatype == "BYTES"
                   else array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                    id=response.id or "", outputs=tensors, raw_output_contents=raw)
    for key, value in (response.parameters or {}).items():
        _set_parameter(message.parameters[key], value)
    return message


def _bytes_elements(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _set_parameter(parameter: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = str(value)
