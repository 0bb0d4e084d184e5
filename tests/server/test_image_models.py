"""Images in, labels out, through a real server: the digits MLP behind the image preprocessing its
version declares. PNG and JPEG answers equal preprocessing by hand and calling the model; Triton's
classification extension (tritonclient's ``class_count``) answers "score:index:label"; a
30,000 × 30,000 PNG and a truncated JPEG get 400 and the server stays ready."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from conftest import ServerProcess, start_server, stop_server
from processing_testlib import LABELS, bomb_png, by_hand, digit_image, publish_digits_images
from server_testlib import eval_rows
from tritonclient.utils import InferenceServerException

MODEL = "digits_png"


@pytest.fixture(scope="module")
def image_server(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("images")
    shutil.copytree(digits_repository, root / "models")
    publish_digits_images(root / "models")
    server = start_server(root / "models", root / "state")
    yield server
    stop_server(server)


def _client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def _infer(server: ServerProcess, images: list[bytes], classes: int = 0) -> httpclient.InferResult:
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=classes)]
    return _client(server).infer(MODEL, [tensor], outputs=wanted)


def _reference(digits_repository: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(digits_repository / "digits" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": rows})[0])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_images_answer_what_preprocessing_by_hand_and_the_model_answer(
        image_server: ServerProcess, digits_repository: Path, fmt: str) -> None:
    rows, _ = eval_rows(digits_repository, 12)
    images = [digit_image(row, fmt, size=8 if fmt == "PNG" else 32) for row in rows]
    expected = _reference(digits_repository, np.stack([by_hand(image) for image in images]))
    served = _infer(image_server, images).as_numpy("probabilities")
    assert served is not None
    np.testing.assert_allclose(served, expected, atol=1e-5)
    top = _infer(image_server, images, classes=3).as_numpy("probabilities")
    assert top is not None and top.shape == (12, 3)
    for row, answer in zip(expected, top, strict=True):
        score, index, label = answer[0].decode().split(":")
        assert int(index) == int(row.argmax()) and label == LABELS[int(index)]
        assert float(score) == pytest.approx(float(row.max()), abs=1e-5)
        assert [float(a.decode().split(":")[0]) for a in answer] == sorted(
            (float(a.decode().split(":")[0]) for a in answer), reverse=True)


def test_metadata_says_what_a_request_may_send_instead_of_tensors(image_server: ServerProcess) -> None:
    metadata = _client(image_server).get_model_metadata(MODEL)
    assert metadata["parameters"]["processing"] == {"kind": "image", "input": "image", "datatype": "BYTES"}
    assert metadata["parameters"]["labels"] == LABELS


def test_the_model_tensors_are_still_accepted_and_classification_works_on_them(
        image_server: ServerProcess, digits_repository: Path) -> None:
    rows, _ = eval_rows(digits_repository, 4)
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = _client(image_server).infer(MODEL, [tensor], outputs=[
        httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=1)])
    labels = [str(a[0]).split(":")[2] for a in result.as_numpy("probabilities")]  # JSON: strings
    assert labels == [LABELS[i] for i in _reference(digits_repository, rows).argmax(1)]


@pytest.mark.parametrize("case", ["bomb", "truncated", "not-an-image", "too-many-bytes"])
def test_bad_images_get_400_and_the_server_stays_ready(image_server: ServerProcess, digits_repository: Path,
                                                       case: str) -> None:
    rows, _ = eval_rows(digits_repository, 1)
    jpeg = digit_image(rows[0], "JPEG", size=64)
    data = {"bomb": bomb_png(), "truncated": jpeg[: len(jpeg) // 2], "not-an-image": b"GIF89a not really",
            "too-many-bytes": b"\xff" * (21 << 20)}[case]
    if case == "bomb":
        assert len(data) < 1000
    with pytest.raises(InferenceServerException) as refused:
        _infer(image_server, [data])
    assert refused.value.status() == "400", refused.value
    assert _client(image_server).is_server_ready()
    assert _infer(image_server, [digit_image(rows[0])]).as_numpy("probabilities") is not None
