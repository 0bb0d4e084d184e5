"""What the optimizer needs to know about a model's tensors, independent of any runtime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ONNX TensorProto element type → (numpy dtype, Open Inference Protocol datatype).
ONNX_TYPES: dict[int, tuple[type[np.generic], str]] = {
    1: (np.float32, "FP32"), 2: (np.uint8, "UINT8"), 3: (np.int8, "INT8"), 4: (np.uint16, "UINT16"),
    5: (np.int16, "INT16"), 6: (np.int32, "INT32"), 7: (np.int64, "INT64"), 9: (np.bool_, "BOOL"),
    10: (np.float16, "FP16"), 11: (np.float64, "FP64"), 12: (np.uint32, "UINT32"),
    13: (np.uint64, "UINT64"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` entries are ints (static) or None (dynamic)."""

    name: str
    dtype: np.dtype
    datatype: str
    shape: tuple[int | None, ...]

    @property
    def batch_dim(self) -> int | None:
        """The leading dimension: None when dynamic (any batch), else the fixed batch size."""
        return self.shape[0] if self.shape else None

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype.name}[{dims}]"
