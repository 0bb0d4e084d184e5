"""Open Inference Protocol datatypes ⇄ numpy dtypes."""

from __future__ import annotations

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
