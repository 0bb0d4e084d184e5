"""The state one optimization run shares between its steps, and what each format step returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.calibration import TensorData
from optimizer.evaluate import GateResult, output_difference, score
from optimizer.progress import Progress
from optimizer.runtimes import Inputs, Predict, predict_all
from optimizer.sources import Source

#: Rows per inference call when the model's batch dimension is dynamic.
EVAL_BATCH = 64


@dataclass
class Job:
    """Inputs of every format step. ``model_path`` is the FP32 (possibly pruned) ONNX to quantize."""

    source: Source
    model_path: Path
    calibration: TensorData
    evaluation: TensorData
    metric: str
    max_drop: float
    reference: np.ndarray          # FP32 outputs on the eval rows (OpenVINO, f32)
    reference_score: float         # the FP32 model's own metric value
    subset_size: int
    progress: Progress
    workdir: Path
    pruning: dict[str, Any] = field(default_factory=dict)
    quantize_outputs: bool = False     # True: the output ops (Softmax, normalisation) may be INT8 too
    max_output_diff: float | None = None  # gate on mean |optimized − FP32| outputs (None: not gated)
    seed: int = 0                      # picks the calibration subset

    @property
    def fixed_batch(self) -> int | None:
        return self.source.inputs[0].batch_dim

    @property
    def eval_batch(self) -> int:
        return self.fixed_batch or EVAL_BATCH

    def calibration_items(self) -> list[Inputs]:
        """A seeded subset of calibration rows, one batch per item (NNCF counts items), at the model's
        batch size."""
        size = self.fixed_batch or 1
        return list(self.calibration.sample(self.subset_size, self.seed).batches(size))

    def evaluate(self, predict: Predict, desc: str) -> tuple[np.ndarray, GateResult]:
        """Outputs of ``predict`` on every eval row and the gate's verdict on them."""
        total = -(-self.evaluation.rows // self.eval_batch)
        batches = self.progress.bar(self.evaluation.batches(self.eval_batch), desc, total)
        outputs = predict_all(predict, batches)
        value = score(self.metric, outputs, self.reference, self.evaluation.labels)
        return outputs, GateResult(self.metric, self.reference_score, value, self.max_drop,
                                   output_difference(outputs, self.reference), self.max_output_diff)


@dataclass
class Candidate:
    """One format's result: files ready to publish (in ``directory``) and how they scored."""

    format: str
    precision: str
    directory: Path
    model_file: str
    gate: GateResult | None = None
    outputs: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.gate is not None and self.gate.passed
