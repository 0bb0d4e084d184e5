"""Triton Python-backend model (``model.py``) that serves one ONNX file with ONNX Runtime.

bench/vs_triton.py copies this file to ``<repository>/<model>/1/model.py`` beside ``model.onnx``.
Triton's dynamic batcher hands ``execute`` the requests it gathered; they are concatenated along the
batch dimension, run as one ONNX Runtime call and split back, one response per request. The session
runs with one intra-op thread and no spinning: the appliance's setting for one worker on one core.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        directory = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(directory / "model.onnx"), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                  for name in self.inputs}
        sizes = [len(a) for a in arrays[self.inputs[0]]]
        feed = {name: (parts[0] if len(parts) == 1 else np.concatenate(parts)) for name, parts in arrays.items()}
        results = self.session.run(self.outputs, feed)
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(result[start:start + size]))
                       for name, result in zip(self.outputs, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None
