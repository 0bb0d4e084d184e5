"""Decode inference requests and encode responses: JSON tensors and the binary tensor extension.

The codec validates everything a client controls before allocating: a declared shape is checked
against ``max_tensor_elements`` first, binary sizes must add up exactly, and JSON data must hold
exactly ``prod(shape)`` elements. Every failure is an :class:`InvalidInput` (HTTP 400).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from appliance.dataplane.tensors import (
    TO_NUMPY,
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    element_size,
    from_numpy,
)
from appliance.errors import InvalidInput, LimitExceeded

HEADER_LENGTH = "Inference-Header-Content-Length"
_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class EncodedBody:
    body: bytes
    content_type: str
    header_length: int | None = None


def _as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _optional_object(value: Any, what: str) -> dict[str, Any]:
    """``null`` or absent is an empty object; anything else must be an object (``[]`` or ``0`` used to
    pass as "empty" through ``or {}``, which the protocol and the OpenAPI schema forbid)."""
    return {} if value is None else _as_object(value, what)


def _optional_bool(params: dict[str, Any], key: str, what: str) -> bool | None:
    value = params.get(key)
    if value is not None and type(value) is not bool:
        raise InvalidInput(f"{what}: '{key}' must be true or false")
    return value


def _parse_shape(raw: Any, name: str, max_elements: int) -> tuple[tuple[int, ...], int]:
    if not isinstance(raw, list) or not all(type(d) is int for d in raw):
        raise InvalidInput(f"input '{name}': shape must be a list of integers")
    if any(d < 0 for d in raw):
        raise InvalidInput(f"input '{name}': shape {raw} has a negative dimension")
    count = math.prod(raw)
    if count > max_elements:
        raise LimitExceeded(
            f"input '{name}': shape {raw} holds {count} elements, over the limit of {max_elements}"
        )
    return tuple(raw), count


def _json_tensor(name: str, datatype: str, shape: tuple[int, ...], count: int, data: Any) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    array = _json_bytes(name, data) if datatype == "BYTES" else _json_numbers(name, datatype, data)
    if array.size != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements, data has {array.size}"
        )
    return array.reshape(shape)


def _json_numbers(name: str, datatype: str, data: list[Any]) -> np.ndarray:
    """Infer first, then convert: strings, nulls, ragged lists, floats for integer types, and
    out-of-range integers are refused instead of being silently coerced or wrapped."""
    dtype = TO_NUMPY[datatype]
    try:
        inferred = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input '{name}': data is ragged or not numeric") from None
    kind = inferred.dtype.kind
    if kind in "fO" and dtype.kind in "iu":  # ints beyond int64 become float64/object in numpy: be exact
        return _json_exact_integers(name, datatype, data)
    allowed = "b" if datatype == "BOOL" else ("iu" if dtype.kind in "iu" else "iuf")
    if inferred.size and kind not in allowed:
        raise InvalidInput(f"input '{name}': data does not match datatype {datatype}")
    if inferred.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if inferred.min() < info.min or inferred.max() > info.max:
            raise InvalidInput(f"input '{name}': values out of range for {datatype}")
    try:
        with np.errstate(over="raise"):  # 65520 as FP16 (or 1e39 as FP32) would silently become inf
            return inferred.astype(dtype, copy=False)
    except FloatingPointError:
        raise InvalidInput(f"input '{name}': values out of range for {datatype}") from None


def _json_exact_integers(name: str, datatype: str, data: list[Any]) -> np.ndarray:
    flat = _flatten(data)
    if not all(type(v) is int for v in flat):
        raise InvalidInput(f"input '{name}': data does not match datatype {datatype}")
    try:
        return np.array(data, dtype=TO_NUMPY[datatype])
    except (ValueError, OverflowError):
        raise InvalidInput(f"input '{name}': values out of range for {datatype}") from None


def _json_bytes(name: str, data: list[Any]) -> np.ndarray:
    flat = _flatten(data)
    array = np.empty(len(flat), dtype=np.object_)
    for index, value in enumerate(flat):
        if not isinstance(value, str):
            raise InvalidInput(f"input '{name}': BYTES data must be strings, got {type(value).__name__}")
        array[index] = value.encode()
    return array


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def binary_tensor(name: str, datatype: str, shape: tuple[int, ...], count: int,
                   chunk: memoryview) -> np.ndarray:
    if datatype == "BYTES":
        return _decode_bytes_elements(name, shape, count, chunk)
    expected = count * element_size(datatype)
    if len(chunk) != expected:
        raise InvalidInput(
            f"input '{name}': binary_data_size {len(chunk)} does not match shape {list(shape)} "
            f"of {datatype} ({expected} bytes)"
        )
    return np.frombuffer(chunk, dtype=TO_NUMPY[datatype]).reshape(shape)


def _decode_bytes_elements(name: str, shape: tuple[int, ...], count: int, chunk: memoryview) -> np.ndarray:
    items: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise InvalidInput(f"input '{name}': BYTES element overruns binary_data_size")
        items.append(bytes(chunk[offset:offset + length]))
        offset += length
        if len(items) > count:
            break
    if len(items) != count:
        raise InvalidInput(f"input '{name}': shape {list(shape)} needs {count} BYTES elements, got {len(items)}")
    return np.array(items, dtype=np.object_).reshape(shape)


def _parse_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for item in raw:
        item = _as_object(item, "each requested output")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("each requested output needs a non-empty string 'name'")
        params = _optional_object(item.get("parameters"), f"output '{name}' parameters")
        classes = params.get("classification", 0)
        if type(classes) is not int or classes < 0:
            raise InvalidInput(f"output '{name}': 'classification' must be a positive integer (top K classes)")
        outputs.append(RequestedOutput(name, _optional_bool(params, "binary_data", f"output '{name}'"), classes))
    return outputs


def decode_request(body: bytes, header_length: int | None, max_elements: int) -> InferRequest:
    """Parse a request body (JSON, or JSON header + binary tensors) into numpy arrays."""
    view = memoryview(body)
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length} is outside the body ({len(body)} bytes)")
        json_part, binary = view[:header_length], view[header_length:]
    else:
        json_part, binary = view, view[:0]
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    doc = _as_object(doc, "the request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _optional_object(doc.get("parameters"), "'parameters'")
    inputs, offset = [], 0
    seen: set[str] = set()
    for raw in raw_inputs:
        tensor, offset = _decode_input(_as_object(raw, "each input"), binary, offset, max_elements)
        if tensor.name in seen:
            raise InvalidInput(f"input '{tensor.name}' given twice")
        seen.add(tensor.name)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return InferRequest(
        inputs=inputs, id=request_id, outputs=_parse_outputs(doc.get("outputs")), parameters=parameters,
        binary_output=bool(_optional_bool(parameters, "binary_data_output", "'parameters'")),
    )


def _decode_input(raw: dict[str, Any], binary: memoryview, offset: int,
                  max_elements: int) -> tuple[InferInput, int]:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a non-empty string 'name'")
    datatype = raw.get("datatype")
    if datatype not in TO_NUMPY:
        raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
    shape, count = _parse_shape(raw.get("shape"), name, max_elements)
    params = _optional_object(raw.get("parameters"), f"input '{name}' parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(f"input '{name}': binary_data_size {size} overruns the body")
        if "data" in raw:
            raise InvalidInput(f"input '{name}': give either 'data' or binary_data_size, not both")
        array = binary_tensor(name, datatype, shape, count, binary[offset:offset + size])
        return InferInput(name, datatype, shape, array), offset + size
    if "data" not in raw:
        raise InvalidInput(f"input '{name}': missing 'data'")
    return InferInput(name, datatype, shape, _json_tensor(name, datatype, shape, count, raw["data"])), offset


def _bytes_to_binary(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _json_data(array: np.ndarray) -> Any:
    if array.dtype.kind in ("O", "S", "U"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    flat = np.ascontiguousarray(array.reshape(-1))
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat


def encode_response(response: InferResponse, request: InferRequest) -> EncodedBody:
    """JSON, or JSON header + binary outputs when the client asked for binary outputs.

    JSON outputs carry no ``parameters`` key: Triton's C++ client treats any such key on an
    output as a sign of binary data.
    """
    wanted = {o.name: o.binary for o in request.outputs} if request.outputs else None
    outputs_doc: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in response.outputs.items():
        binary = request.binary_output
        if wanted is not None and wanted.get(name) is not None:
            binary = bool(wanted[name])
        entry: dict[str, Any] = {"name": name, "datatype": from_numpy(array.dtype), "shape": list(array.shape)}
        if binary:
            raw = _bytes_to_binary(array) if entry["datatype"] == "BYTES" else np.ascontiguousarray(
                array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(array)
        outputs_doc.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs_doc
    header = orjson.dumps(doc, option=_NUMPY_OPTS)
    if not blobs:
        return EncodedBody(header, "application/json")
    return EncodedBody(header + b"".join(blobs), "application/octet-stream", len(header))
