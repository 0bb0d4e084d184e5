"""Helpers of the lifecycle tests: publish versions into a repository while a server runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from modelrepo import Manifest, publish_version, staging_directory


def publish_copy(model_dir: Path, source_version: int = 1, version: int | None = None) -> Path:
    """Publish the files of ``source_version`` again as a new version (atomically, like the optimizer)."""
    with staging_directory(model_dir) as staging:
        for path in (model_dir / str(source_version)).iterdir():
            shutil.copy2(path, staging / path.name)
        return publish_version(model_dir, staging, version)


def publish_perturbed(model_dir: Path, source_version: int = 1, scale: float = -1.0) -> Path:
    """A deliberately wrong version: the ONNX model's initializers multiplied by ``scale``."""
    model = onnx.load(str(model_dir / str(source_version) / "model.onnx"))
    for index, initializer in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(initializer)
        if array.dtype.kind == "f" and array.ndim == 2:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array * np.float32(scale),
                                                                             initializer.name))
    with staging_directory(model_dir) as staging:
        (staging / "model.onnx").write_bytes(model.SerializeToString())
        Manifest.for_directory(staging, format="onnx", precision="fp32", model_file="model.onnx",
                               parent_version=source_version).write(staging)
        return publish_version(model_dir, staging)


def publish_broken(model_dir: Path) -> Path:
    """A version whose file does not match its manifest (refused at load)."""
    target = publish_copy(model_dir)
    (target / "model.onnx").write_bytes(b"not a model")
    return target
