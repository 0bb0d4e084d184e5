"""Pooling folded into an exported encoder graph matches numpy, for every pooling a folder may ask for.

Runs without the 'hf' extra: a tiny stand-in encoder (token id × a fixed vector) replaces the export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optimizer.errors import OptimizerError
from optimizer.hf import TextModel, fold_pooling, read_text_model

HIDDEN = 4


def _stand_in_encoder(path: Path) -> None:
    """input_ids, attention_mask, token_type_ids → last_hidden_state[b, s, h] = (ids + types) · w[h]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([1.0, -2.0, 0.5, 3.0], np.float32), "w")
    nodes = [helper.make_node("Add", ["input_ids", "token_type_ids"], ["ids_sum"], name="add_types"),
             helper.make_node("Cast", ["ids_sum"], ["ids_f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["ids_f", "axis"], ["ids_e"], name="unsqueeze"),
             helper.make_node("Mul", ["ids_e", "w"], ["last_hidden_state"], name="mul")]
    axis = numpy_helper.from_array(np.array([-1], np.int64), "axis")
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch_size", "sequence_length"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                           ["batch_size", "sequence_length", HIDDEN])
    graph = helper.make_graph(nodes, "encoder", inputs, [output], [weights, axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


def _expected(ids: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    hidden = ids[..., None].astype(np.float32) * np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    m = mask[..., None].astype(np.float32)
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = np.where(m > 0, hidden, -1e9).max(axis=1)
    else:
        count = m.sum(axis=1)
        pooled = (hidden * m).sum(axis=1) / (count if pooling == "mean" else np.sqrt(count))
    if normalize:
        pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled


@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("mean", False), ("cls", False),
                                                    ("max", True), ("mean_sqrt_len", False)])
def test_folded_pooling_matches_numpy(pooling: str, normalize: bool, tmp_path: Path) -> None:
    import onnxruntime as ort

    _stand_in_encoder(tmp_path / "encoder.onnx")
    fold_pooling(tmp_path / "encoder.onnx", tmp_path / "pooled.onnx",
                 TextModel(tmp_path / "tokenizer.json", 16, pooling, normalize))
    session = ort.InferenceSession(str(tmp_path / "pooled.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]  # token types folded
    assert [o.name for o in session.get_outputs()] == ["embeddings"]
    ids = np.array([[101, 7, 9, 102, 0, 0], [101, 3, 4, 5, 6, 102]], np.int64)
    mask = (ids != 0).astype(np.int64)
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, _expected(ids, mask, pooling, normalize), rtol=1e-5)


def _folder(tmp_path: Path, pooling: dict[str, bool] | None, max_seq: int | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (tmp_path / "tokenizer.json").write_text("{}")
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
        (tmp_path / "modules.json").write_text(json.dumps([
            {"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    if max_seq is not None:
        (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq}))
    return tmp_path


def test_text_settings_come_from_the_sentence_transformers_files(tmp_path: Path) -> None:
    text = read_text_model(_folder(tmp_path, {"pooling_mode_cls_token": True}, max_seq=128))
    assert (text.pooling, text.normalize, text.max_length) == ("cls", True, 128)
    assert read_text_model(tmp_path, max_length=32).max_length == 32


def test_plain_transformers_folder_defaults_to_mean_pooling_at_256(tmp_path: Path) -> None:
    text = read_text_model(_folder(tmp_path, None))
    assert (text.pooling, text.normalize, text.max_length) == ("mean", False, 256)


def test_unsupported_pooling_and_length_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"pooling_mode_weightedmean_tokens": True})
    with pytest.raises(OptimizerError, match="pooling"):
        read_text_model(folder)
    with pytest.raises(OptimizerError, match=r"outside 2\.\.512"):
        read_text_model(folder, max_length=1024)


def test_missing_extra_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from optimizer.hf import export_onnx

    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", None)  # as if the 'hf' extra were absent
    folder = _folder(tmp_path, None)
    with pytest.raises(OptimizerError, match=r"pip install 'model-appliance\[hf\]'"):
        export_onnx(folder, tmp_path / "work", read_text_model(folder))


def test_sentence_file_without_sentences_is_refused(tmp_path: Path) -> None:
    from optimizer.text import read_sentences

    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(OptimizerError, match="holds no sentences"):
        read_sentences(blank, "calibration")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(OptimizerError, match="not a readable UTF-8"):
        read_sentences(tmp_path / "latin1.txt", "eval")
    assert read_sentences(_lines(tmp_path / "ok.txt", " One. \n\nTwo.\n"), "eval") == ["One.", "Two."]


def _lines(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
