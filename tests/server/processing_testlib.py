"""Models with processing declared in their version, built in tests: the bundled digits MLP behind an
image preprocessing (8×8 grey PNGs in, labels out), and images made here (PNG, JPEG, a bomb)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from modelrepo import Manifest, publish_version, staging_directory

#: The digits MLP reads raw 0–16 intensities as a vector of 64: grey pixels × 16/255, flattened.
DIGITS_IMAGE = {"kind": "image", "inputs": ["input"], "mode": "L", "resize": [8, 8], "scale": 16 / 255,
                "layout": "flat", "max_pixels": 1_000_000}
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def publish_digits_images(repository: Path, name: str = "digits_png") -> Path:
    """The digits FP32 ONNX as a new model whose version declares image preprocessing and labels."""
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.toml").write_text("max_batch_size = 16\n\n[[output]]\nname = \"probabilities\"\n"
                                          "datatype = \"FP32\"\ndims = [10]\n", encoding="utf-8")
    with staging_directory(model_dir) as staging:
        (staging / "model.onnx").write_bytes((repository / "digits" / "1" / "model.onnx").read_bytes())
        (staging / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
        Manifest.for_directory(staging, format="onnx", precision="fp32", model_file="model.onnx",
                               extra={"preprocessing": DIGITS_IMAGE,
                                      "postprocessing": {"labels": "labels.txt"}}).write(staging)
        return publish_version(model_dir, staging)


def digit_image(row: np.ndarray, fmt: str = "PNG", size: int = 8) -> bytes:
    """One digits row (0–16 intensities) as an image file; larger sizes are upscaled."""
    from PIL import Image

    pixels = np.clip(np.round(row.reshape(8, 8) * 255 / 16), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "L")
    if size != 8:
        image = image.resize((size, size), Image.Resampling.NEAREST).convert("RGB")
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def by_hand(data: bytes) -> np.ndarray:
    """DIGITS_IMAGE done by hand: decode, grey, resize to 8×8 (bilinear), ×16/255, flatten."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L")
    if image.size != (8, 8):
        image = image.resize((8, 8), Image.Resampling.BILINEAR)
    return (np.asarray(image, dtype=np.float32) * np.float32(16 / 255)).reshape(64)


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes declaring width × height grey pixels (the IDAT holds only the start)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 65536, 9))
            + chunk(b"IEND", b""))


def manifest_of(version_dir: Path) -> dict[str, object]:
    return dict(json.loads((version_dir / "manifest.json").read_text()))
