"""A Hugging Face folder as ``appliance models add`` takes it: exported to FP32 ONNX, nothing else.

``appliance models add`` publishes a model as it is (no calibration data, no gate); for a Hugging
Face folder that still needs the export the optimizer does (optimum, pooling folded in, the
tokenizer beside the model and the text settings in the manifest), so the command borrows this
one step from the optimizer, as the ``appliance`` command line borrows ``optimize``: by module name,
and only when installed (the ``hf`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.errors import OptimizerError
from optimizer.hf import is_hf_folder
from optimizer.sources import Source, load_source

__all__ = ["Exported", "OptimizerError", "export_folder", "is_hf_folder", "text_preprocessing"]


@dataclass(frozen=True)
class Exported:
    onnx: Path                      # the FP32 model, under the work folder
    companions: tuple[Path, ...]    # files the version carries beside it (tokenizer.json)
    manifest_extra: dict[str, Any]  # top-level manifest keys (``preprocessing``)
    source_sha256: str              # one hash over the whole folder, for provenance


def text_preprocessing(source: Source) -> dict[str, Any]:
    """The manifest's ``preprocessing`` of a text model: how the server turns text into its inputs."""
    assert source.text is not None
    return {"kind": "text", **source.text.to_dict(), "inputs": [spec.name for spec in source.inputs],
            "outputs": [spec.name for spec in source.outputs]}


def export_folder(folder: Path, workdir: Path, *, max_seq_length: int | None = None) -> Exported:
    """Export ``folder`` to ONNX under ``workdir``; OptimizerError (one line) when it cannot be."""
    if not is_hf_folder(folder):
        raise OptimizerError(f"{folder} is not a Hugging Face model folder (no config.json)")
    source = load_source(folder, workdir, max_seq_length=max_seq_length)
    if source.text is None:
        return Exported(source.onnx_path, (), {}, source.sha256)
    return Exported(source.onnx_path, (source.text.tokenizer,), {"preprocessing": text_preprocessing(source)},
                    source.sha256)
