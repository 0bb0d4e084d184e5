"""Tensors as the data plane sees them: request/response types, datatypes ⇄ numpy, the digest.

Every front end decodes its wire format into these types; none of them knows a protocol.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Protocol datatype → numpy dtype (little-endian, as the binary extension requires).
TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

_FROM_NUMPY: dict[str, str] = {dt.str: name for name, dt in TO_NUMPY.items() if name != "BYTES"}
_FROM_NUMPY["|b1"] = "BOOL"
_FROM_NUMPY["|u1"] = "UINT8"
_FROM_NUMPY["|i1"] = "INT8"


def from_numpy(dtype: np.dtype) -> str:
    """Protocol datatype of a numpy dtype; object and string arrays are BYTES."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    name = _FROM_NUMPY.get(dtype.newbyteorder("<").str if dtype.byteorder == ">" else dtype.str)
    if name is None:
        raise ValueError(f"numpy dtype {dtype} has no protocol datatype")
    return name


def element_size(datatype: str) -> int:
    """Bytes per element in the binary extension; BYTES has no fixed size (0)."""
    return 0 if datatype == "BYTES" else TO_NUMPY[datatype].itemsize


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None
    classification: int = 0  # Triton's classification extension: answer the top K classes as BYTES


@dataclass(slots=True)
class InferRequest:
    inputs: list[InferInput]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False

    @property
    def nbytes(self) -> int:
        return sum(i.data.nbytes for i in self.inputs)


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] | None = None


def tensor_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: what the audit log stores instead of data,
    and what the prediction cache keys on. BYTES elements are length-prefixed, so ``["ab", "c"]``
    and ``["a", "bc"]`` differ."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = tensors[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype.kind == "O":
            for item in array.reshape(-1):
                data = bytes(item) if not isinstance(item, str) else item.encode()
                digest.update(len(data).to_bytes(4, "little"))
                digest.update(data)
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()
