"""The ops that turn a model's last layer into its answer, kept out of quantization.

A quantized Softmax answers probabilities in steps of 1/255 (ONNX Runtime gives its output a fixed
0–1 range): confidence, entropy and any client threshold become coarse while top-1 accuracy does
not move. So, unless ``--quantize-outputs`` is given, every op between a graph output and the last
compute layer (Softmax, Sigmoid, LogSoftmax, normalisation, pooling, reshapes) is excluded: by node
name for ONNX Runtime (``nodes_to_exclude``) and through an ``nncf.IgnoredScope`` for NNCF. The
compute layers themselves stay INT8: they are where the speed is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: Layers the walk back from an output stops at (ONNX and OpenVINO spellings).
_ONNX_COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "ConvInteger"}
_OPENVINO_COMPUTE = {"MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData"}
_OPENVINO_SOURCES = {"Parameter", "Constant", "Result"}
#: Bound on the ops kept in float per output: a transformer's residual stream is one long chain of
#: non-compute ops, and the answer's own ops are the few nearest the output.
MAX_OUTPUT_OPS = 8


def onnx_output_nodes(path: Path) -> list[str]:
    """Names of the ONNX nodes from each graph output back to (not including) a compute layer."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}

    def inputs(node: Any) -> list[Any]:
        return [producer[name] for name in node.input if name in producer]

    starts = [producer[out.name] for out in graph.output if out.name in producer]
    found = _walk(starts, inputs, lambda node: node.op_type in _ONNX_COMPUTE,
                  lambda node: node.name or str(id(node)))
    return [node.name for node in found if node.name]


def openvino_output_nodes(model: Any) -> list[str]:
    """Friendly names of the OpenVINO ops from each result back to (not including) a compute layer."""

    def inputs(op: Any) -> list[Any]:
        return [value.get_node() for value in op.input_values()
                if value.get_node().get_type_name() not in _OPENVINO_SOURCES]

    starts = [op for result in model.get_results() for op in inputs(result)]
    found = _walk(starts, inputs, lambda op: op.get_type_name() in _OPENVINO_COMPUTE,
                  lambda op: op.get_friendly_name())  # wrappers are new objects on each call
    return [op.get_friendly_name() for op in found]


def ignored_scope(model: Any, quantize_outputs: bool) -> Any:
    """NNCF's ignored scope for ``model``'s output ops (``None`` when they may be quantized)."""
    import nncf

    names = [] if quantize_outputs else openvino_output_nodes(model)
    # validate=False: a name NNCF would not have quantized anyway is not an error.
    return nncf.IgnoredScope(names=names, validate=False) if names else None


def _walk(starts: Iterable[Any], inputs: Callable[[Any], list[Any]], stop: Callable[[Any], bool],
          key: Callable[[Any], str]) -> list[Any]:
    """Breadth-first from the outputs, stopping at compute layers, at most MAX_OUTPUT_OPS per output."""
    found: list[Any] = []
    seen: set[str] = set()
    for start in starts:
        queue, taken = deque([start]), 0
        while queue and taken < MAX_OUTPUT_OPS:
            node = queue.popleft()
            if key(node) in seen or stop(node):
                continue
            seen.add(key(node))
            found.append(node)
            taken += 1
            queue.extend(inputs(node))
    return found
