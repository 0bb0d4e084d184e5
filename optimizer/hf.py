"""Hugging Face model folders as sources: export to ONNX through optimum, with pooling folded in.

A sentence-embedding model is served as ``input_ids``, ``attention_mask`` (INT64 [batch, seq]) →
``embeddings`` (FP32 [batch, hidden]): the pooling (and the L2 normalisation, when the folder's
sentence-transformers ``modules.json`` lists it) becomes part of the graph, so a client gets the
vectors the library would give and never handles per-token states. ``token_type_ids`` (all zeros
for one segment) becomes a constant inside the graph rather than an input every client must send.

Needs the optional ``hf`` extra (optimum-onnx, transformers, CPU torch). Nothing is downloaded:
the hub is switched off and the folder must hold the weights and the tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.errors import OptimizerError

#: Opset of the exported graph (both runtimes and both quantizers handle it).
OPSET = 17
#: Used when the folder says nothing about sequence length (sentence-transformers' usual value).
DEFAULT_MAX_LENGTH = 256
OUTPUT = "embeddings"
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len")
_HIDDEN = "last_hidden_state"


@dataclass(frozen=True)
class TextModel:
    """How raw text becomes this model's inputs, and how its token states became one vector."""

    tokenizer: Path          # tokenizer.json (the `tokenizers` package reproduces the ids from it)
    max_length: int          # truncation length; batches are padded to their longest row
    pooling: str
    normalize: bool

    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.name, "max_length": self.max_length, "padding": "longest",
                "pooling": self.pooling, "normalize": self.normalize}


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_text_model(folder: Path, max_length: int | None = None) -> TextModel:
    """Tokenizer, sequence length and pooling from the folder's own files (sentence-transformers layout)."""
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.is_file():
        raise OptimizerError(f"source {folder} is a Hugging Face model folder without tokenizer.json "
                             "(a fast tokenizer is needed to turn text into the model's inputs)")
    config = _json(folder / "config.json")
    st_config = _json(folder / "sentence_bert_config.json")
    limit = int(config.get("max_position_embeddings") or 512)
    length = max_length or int(st_config.get("max_seq_length") or min(DEFAULT_MAX_LENGTH, limit))
    if not 2 <= length <= limit:
        raise OptimizerError(f"sequence length {length} is outside 2..{limit} (the model's positions)")
    modules = _json(folder / "modules.json", default=[])
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    pooling = _pooling(folder, modules)
    return TextModel(tokenizer, length, pooling, any(t.endswith(".Normalize") for t in types))


def _pooling(folder: Path, modules: list[Any]) -> str:
    paths = [str(m.get("path", "")) for m in modules
             if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")]
    settings = _json(folder / paths[0] / "config.json") if paths else {}
    chosen = [name for name in POOLINGS if settings.get(f"pooling_mode_{name}_token"
                                                      if name == "cls" else f"pooling_mode_{name}_tokens")]
    if paths and len(chosen) != 1:
        raise OptimizerError(f"source {folder}: pooling {settings} is not one of {', '.join(POOLINGS)}")
    return chosen[0] if chosen else "mean"


def _json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return {} if default is None else default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptimizerError(f"{path} is not readable JSON ({exc})") from None


def export_onnx(folder: Path, target: Path, text: TextModel) -> Path:
    """Export ``folder`` for feature extraction and fold pooling in; returns the ONNX path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise OptimizerError("Hugging Face sources need the optional extra: pip install "
                             "'model-appliance[hf]' (optimum-onnx, transformers, CPU torch)") from None
    raw = target / "hf-export"
    try:
        with warnings.catch_warnings(), _quiet_loggers("transformers", "optimum"):
            warnings.simplefilter("ignore")  # tracer and deprecation chatter from torch/transformers
            main_export(str(folder), output=str(raw), task="feature-extraction", library_name="transformers",
                        opset=OPSET, device="cpu", do_validation=False, local_files_only=True)
    except Exception as exc:  # optimum raises many unrelated types for unsupported or broken folders
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise OptimizerError(f"optimum cannot export {folder} to ONNX: {first}") from None
    exported = raw / "model.onnx"
    if not exported.is_file():
        raise OptimizerError(f"optimum wrote no model.onnx for {folder}")
    path = target / "hf-embeddings.onnx"
    fold_pooling(exported, path, text)
    return path


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The exporters log advice meant for their own developers (opset hints, optional packages)."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


def fold_pooling(source: Path, target: Path, text: TextModel) -> None:
    """Rewrite the exported graph: token states → one pooled (normalised) vector per row."""
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    names = [value.name for value in graph.input]
    if "input_ids" not in names or "attention_mask" not in names or _HIDDEN not in {o.name for o in graph.output}:
        raise OptimizerError(f"the exported model has inputs {names}; expected input_ids and attention_mask "
                             f"with a {_HIDDEN} output (an encoder model)")
    if "token_type_ids" in names:
        _constant_token_types(graph)
    hidden = _hidden_size(graph)
    graph.node.extend(_pooling_nodes(text.pooling, text.normalize))
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch_size", hidden]))
    onnx.save_model(model, str(target))


def _constant_token_types(graph: Any) -> None:
    from onnx import TensorProto, helper

    kept = [value for value in graph.input if value.name != "token_type_ids"]
    del graph.input[:]
    graph.input.extend(kept)
    zero = helper.make_tensor("pool_zero_i64", TensorProto.INT64, [1], [0])
    graph.node.insert(0, helper.make_node("Shape", ["input_ids"], ["pool_ids_shape"], name="token_types_shape"))
    graph.node.insert(1, helper.make_node("ConstantOfShape", ["pool_ids_shape"], ["token_type_ids"],
                                          name="token_types_zero", value=zero))


def _hidden_size(graph: Any) -> int | str:
    for value in graph.output:
        if value.name == _HIDDEN:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 3 and dims[2].dim_value > 0:
                return int(dims[2].dim_value)
    return "hidden"


def _pooling_nodes(pooling: str, normalize: bool) -> list[Any]:
    """ONNX nodes from ``last_hidden_state`` and ``attention_mask`` to ``embeddings`` (opset 17)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, values: Any, dtype: str) -> Any:
        import numpy as np

        return helper.make_node("Constant", [], [name], name=name,
                                value=numpy_helper.from_array(np.array(values, dtype=dtype), name))

    pooled = "pool_out" if normalize else OUTPUT
    nodes = [const("pool_axis1", [1], "int64"), const("pool_axis_last", [-1], "int64"),
             const("pool_eps", [1e-9], "float32"),
             helper.make_node("Cast", ["attention_mask"], ["pool_mask_f"], name="pool_cast", to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["pool_mask_f", "pool_axis_last"], ["pool_mask"], name="pool_unsqueeze")]
    if pooling == "cls":
        nodes.append(helper.make_node("Gather", [_HIDDEN, "pool_zero"], [pooled], name="pool_cls", axis=1))
        nodes.insert(0, const("pool_zero", 0, "int64"))
    elif pooling == "max":
        nodes += [const("pool_big", [-1e9], "float32"),
                  helper.make_node("Equal", ["pool_mask", "pool_zero_f"], ["pool_is_pad"], name="pool_is_pad"),
                  helper.make_node("Where", ["pool_is_pad", "pool_big", _HIDDEN], ["pool_masked"], name="pool_where"),
                  helper.make_node("ReduceMax", ["pool_masked"], [pooled], name="pool_max", axes=[1], keepdims=0)]
        nodes.insert(0, const("pool_zero_f", [0.0], "float32"))
    else:
        divisor = "pool_count" if pooling == "mean" else "pool_sqrt_count"
        nodes += [helper.make_node("Mul", [_HIDDEN, "pool_mask"], ["pool_masked"], name="pool_mask_mul"),
                  helper.make_node("ReduceSum", ["pool_masked", "pool_axis1"], ["pool_sum"], name="pool_sum",
                                   keepdims=0),
                  helper.make_node("ReduceSum", ["pool_mask", "pool_axis1"], ["pool_len"], name="pool_len",
                                   keepdims=0),
                  helper.make_node("Max", ["pool_len", "pool_eps"], ["pool_count"], name="pool_count"),
                  helper.make_node("Sqrt", ["pool_count"], ["pool_sqrt_count"], name="pool_sqrt"),
                  helper.make_node("Div", ["pool_sum", divisor], [pooled], name="pool_mean")]
    if normalize:
        nodes += [const("pool_norm_eps", [1e-12], "float32"),
                  helper.make_node("Mul", [pooled, pooled], ["pool_sq"], name="pool_sq"),
                  helper.make_node("ReduceSum", ["pool_sq", "pool_axis1"], ["pool_sumsq"], name="pool_sumsq",
                                   keepdims=1),
                  helper.make_node("Sqrt", ["pool_sumsq"], ["pool_norm_raw"], name="pool_norm_raw"),
                  helper.make_node("Max", ["pool_norm_raw", "pool_norm_eps"], ["pool_norm"], name="pool_norm"),
                  helper.make_node("Div", [pooled, "pool_norm"], [OUTPUT], name="pool_normalize")]
    return nodes


def down_projections(path: Path) -> tuple[str, ...]:
    """MatMuls whose weight narrows the width (``[inner, hidden]``, inner > hidden): the FFN outputs.

    Their inputs come straight from the GELU, with the heavy tails that per-tensor INT8 cannot hold;
    keeping them in float is the known remedy for static quantization of BERT-like encoders.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    names = []
    for node in graph.node:
        shape = shapes.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if shape is not None and len(shape) == 2 and shape[0] > shape[1]:
            names.append(node.name)
    return tuple(names)
