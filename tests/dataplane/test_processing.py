"""Processing steps alone (no server): the classification strings, the declarations a version may
make (and the ones it is refused for), text truncation as declared and padding to the longest only,
and image limits checked before decoding."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from appliance.dataplane.processing import build_processing, classify
from appliance.dataplane.processing.image import ImageDecoder, ImageSpec
from appliance.errors import InvalidInput, LimitExceeded


def test_classify_answers_top_k_as_score_index_label_best_first() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    out = classify(scores, 2, ["cat", "dog", "eel"])
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"0.700000:1:dog", b"0.200000:2:eel"], [b"0.500000:0:cat", b"0.250000:1:dog"]]
    assert classify(scores, 9, ()).tolist()[0] == [b"0.700000:1", b"0.200000:2", b"0.100000:0"]  # K capped
    with pytest.raises(InvalidInput):
        classify(np.array([b"x"], dtype=np.object_), 1, ())


def _version(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, dict[str, str]]:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path, {name: "0" * 64 for name in files}


def test_labels_come_from_a_hashed_file_of_the_version_else_from_model_toml(tmp_path: Path) -> None:
    folder, files = _version(tmp_path, {"labels.txt": b"a\nb\n\n"})
    made = build_processing(folder, {"postprocessing": {"labels": "labels.txt"}}, files, ("x", "y"))
    assert made is not None and made.labels == ("a", "b") and made.step is None
    fallback = build_processing(folder, {}, files, ("x", "y"))
    assert fallback is not None and fallback.labels == ("x", "y")
    assert build_processing(folder, {}, files, ()) is None
    with pytest.raises(ValueError, match="not listed in the manifest"):
        build_processing(folder, {"postprocessing": {"labels": "labels.txt"}}, {}, ())


@pytest.mark.parametrize("declaration", [
    {"kind": "audio"}, {"kind": "image", "inputs": ["a", "b"]}, {"kind": "image", "inputs": ["x"], "layout": "CHW"},
    {"kind": "image", "inputs": ["x"], "mean": [1, 2]}, {"kind": "image", "inputs": ["x"], "std": [0.0]},
    {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 1},
    {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8, "padding": "max_length"},
])
def test_wrong_declarations_refuse_the_version(tmp_path: Path, declaration: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_processing(tmp_path, {"preprocessing": declaration}, {}, ())


def _tokenizer_file(tmp_path: Path) -> Path:
    """A tiny WordLevel tokenizer.json with [CLS]/[SEP] and a padding setting of its own (128)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate("abcdefgh")}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=128)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_text_truncates_as_declared_and_pads_to_the_longest_sentence_only(tmp_path: Path) -> None:
    _tokenizer_file(tmp_path)
    declared = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 6, "padding": "longest",
                "inputs": ["input_ids", "attention_mask", "token_type_ids"]}
    made = build_processing(tmp_path, {"preprocessing": declared}, {"tokenizer.json": "0" * 64}, ())
    assert made is not None and made.public_input == "text"
    assert dict(made.pad_axes) == {"input_ids": (1, 0), "attention_mask": (1, 0), "token_type_ids": (1, 0)}
    assert made.step is not None
    tensors, tokens = made.step.encode(np.array([b"a b", b"a b c d e f g h"], dtype=np.object_))
    np.testing.assert_array_equal(tensors["input_ids"], [[2, 4, 5, 3, 0, 0], [2, 4, 5, 6, 7, 3]])
    np.testing.assert_array_equal(tensors["attention_mask"], [[1, 1, 1, 1, 0, 0], [1] * 6])
    assert tokens == 10 and tensors["input_ids"].dtype == np.int64
    single, _ = made.step.encode(np.array([b"a"], dtype=np.object_))
    assert single["input_ids"].shape == (1, 3)  # not 128, not 6
    with pytest.raises(InvalidInput, match="UTF-8"):
        made.step.encode(np.array([b"\xff\xfe"], dtype=np.object_))


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height), (128, 128, 128) if mode == "RGB" else 128).save(out, "PNG")
    return out.getvalue()


def test_image_resize_crop_normalise_and_layouts() -> None:
    spec = ImageSpec("x", resize=(4,), crop=(4, 4), mean=(0.5,), std=(0.25,), layout="NCHW")
    pixels = ImageDecoder(spec).pixels(_png(8, 6))
    assert pixels.shape == (3, 4, 4) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, (128 / 255 - 0.5) / 0.25, atol=1e-5)
    nhwc = ImageDecoder(ImageSpec("x", resize=(2, 3), layout="NHWC", mode="L")).pixels(_png(8, 6))
    assert nhwc.shape == (2, 3, 1)
    assert ImageDecoder(ImageSpec("x", layout="flat", mode="L")).pixels(_png(4, 2)).shape == (8,)


def test_image_limits_apply_before_decoding() -> None:
    decoder = ImageDecoder(ImageSpec("x", max_pixels=100, max_bytes=10_000))
    with pytest.raises(LimitExceeded, match="over the limit of 100 pixels"):
        decoder.pixels(_png(20, 20))
    with pytest.raises(LimitExceeded, match="bytes"):
        decoder.pixels(b"\x89PNG" + b"\0" * 20_000)
    with pytest.raises(InvalidInput, match="cannot decode"):
        decoder.pixels(_png(5, 5)[:40])
    with pytest.raises(InvalidInput, match="smaller than"):
        ImageDecoder(ImageSpec("x", crop=(9, 9))).pixels(_png(5, 5))


def test_manifest_round_trip_keeps_the_declaration(tmp_path: Path) -> None:
    declared = {"kind": "image", "inputs": ["x"], "resize": 256, "crop": [224, 224], "order": "BGR"}
    spec = ImageSpec.from_manifest(json.loads(json.dumps(declared)))
    assert spec.resize == (256,) and spec.crop == (224, 224) and spec.order == "BGR"
