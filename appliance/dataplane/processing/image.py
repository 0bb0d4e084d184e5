"""Images in: JPEG/PNG/WebP bytes → the float tensor a version's network takes (Pillow).

The version's manifest declares the steps (``preprocessing.kind = "image"``): colour ``mode``
("RGB" or "L"), ``resize`` (shorter side to N, or exact ``[height, width]``), an optional centre
``crop`` ``[height, width]``, ``scale`` (1/255 by default), per-channel ``mean``/``std``, channel
``order`` ("RGB"/"BGR") and ``layout`` ("NCHW", "NHWC" or "flat" for a vector input).

Limits come before work: an encoded image over ``max_bytes`` is refused unread, and the pixel
count in the header is checked against ``max_pixels`` before anything is decoded, so a tiny file
declaring 30,000 × 30,000 pixels (a decompression bomb) is a 400, never gigabytes of memory.
A truncated or corrupt file is a 400 too (Pillow's LOAD_TRUNCATED_IMAGES stays off).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.errors import InvalidInput, LimitExceeded

FORMATS = ("JPEG", "PNG", "WEBP")
LAYOUTS = ("NCHW", "NHWC", "flat")
_RESAMPLING = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


@dataclass(frozen=True, slots=True)
class ImageSpec:
    model_input: str
    mode: str = "RGB"
    resize: tuple[int, ...] = ()          # (shorter side,) or (height, width); () keeps the size
    crop: tuple[int, int] | None = None   # centre crop (height, width) after the resize
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    order: str = "RGB"
    layout: str = "NCHW"
    interpolation: str = "bilinear"
    max_bytes: int = 20 << 20
    max_pixels: int = 40_000_000

    @classmethod
    def from_manifest(cls, raw: dict[str, Any]) -> ImageSpec:
        inputs = raw.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], str):
            raise ValueError("image preprocessing needs 'inputs': [the model's image input]")
        spec = cls(inputs[0], mode=str(raw.get("mode", "RGB")), resize=_ints(raw.get("resize", []), "resize"),
                   crop=_pair(raw.get("crop")), scale=float(raw.get("scale", 1.0 / 255.0)),
                   mean=tuple(float(v) for v in raw.get("mean", [0.0])),
                   std=tuple(float(v) for v in raw.get("std", [1.0])), order=str(raw.get("order", "RGB")),
                   layout=str(raw.get("layout", "NCHW")), interpolation=str(raw.get("interpolation", "bilinear")),
                   max_bytes=int(raw.get("max_bytes", 20 << 20)), max_pixels=int(raw.get("max_pixels", 40_000_000)))
        spec.check()
        return spec

    def check(self) -> None:
        channels = 3 if self.mode == "RGB" else 1
        if self.mode not in ("RGB", "L") or self.order not in ("RGB", "BGR") or self.layout not in LAYOUTS:
            raise ValueError("image preprocessing: mode RGB|L, order RGB|BGR, layout NCHW|NHWC|flat")
        if len(self.resize) not in (0, 1, 2) or self.interpolation not in _RESAMPLING:
            raise ValueError("image preprocessing: resize is N or [height, width]; interpolation "
                             + "|".join(_RESAMPLING))
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels) or 0.0 in self.std:
            raise ValueError(f"image preprocessing: mean/std need 1 or {channels} values, std non-zero")


def _ints(raw: Any, what: str) -> tuple[int, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not all(type(v) is int and v > 0 for v in values):
        raise ValueError(f"image preprocessing: '{what}' must be positive integers")
    return tuple(values)


def _pair(raw: Any) -> tuple[int, int] | None:
    if raw is None:
        return None
    values = _ints(raw, "crop")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


class ImageDecoder:
    """Decodes and normalises one request's images; runs in a worker thread."""

    def __init__(self, spec: ImageSpec) -> None:
        self.spec = spec
        channels = 3 if spec.mode == "RGB" else 1
        self._mean = np.array(spec.mean * (channels if len(spec.mean) == 1 else 1), dtype=np.float32)
        self._std = np.array(spec.std * (channels if len(spec.std) == 1 else 1), dtype=np.float32)

    def encode(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        rows = [self.pixels(item) for item in images.reshape(-1)]
        return {self.spec.model_input: np.stack(rows)}, 0

    def pixels(self, item: object) -> np.ndarray:
        """One image as the model's float32 tensor (without the batch dimension)."""
        spec = self.spec
        array = np.asarray(self._resized(self._open(item)), dtype=np.float32)
        if array.ndim == 2:
            array = array[:, :, None]
        if spec.order == "BGR":
            array = array[:, :, ::-1]
        array = (array * np.float32(spec.scale) - self._mean) / self._std
        if spec.layout == "NCHW":
            array = array.transpose(2, 0, 1)
        elif spec.layout == "flat":
            array = array.reshape(-1)
        return np.ascontiguousarray(array, dtype=np.float32)

    def _open(self, item: object) -> Any:
        from PIL import Image  # imported here: a server without image models never loads Pillow

        raw = item if isinstance(item, bytes) else str(item).encode()
        if len(raw) > self.spec.max_bytes:
            raise LimitExceeded(f"an encoded image of {len(raw)} bytes is over the limit of {self.spec.max_bytes}")
        # No warnings.catch_warnings() here: it swaps process-wide state and this runs in several
        # threads. Pillow's own bomb check (an error past 2 × Image.MAX_IMAGE_PIXELS) and ours, on the
        # header's size before load(), refuse the same files either way.
        try:
            image = Image.open(io.BytesIO(raw), formats=FORMATS)  # reads the header only
            width, height = image.size
            if width * height > self.spec.max_pixels:
                raise LimitExceeded(f"an image of {width}x{height} pixels is over the limit of "
                                    f"{self.spec.max_pixels} pixels")
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise LimitExceeded(f"image refused as a decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying corrupt/truncated/unknown
            raise InvalidInput(f"cannot decode image ({', '.join(FORMATS)} accepted): {exc}") from None
        return image.convert(self.spec.mode) if image.mode != self.spec.mode else image

    def _resized(self, image: Any) -> Any:
        spec = self.spec
        resample = _RESAMPLING[spec.interpolation]
        if len(spec.resize) == 2:
            image = image.resize((spec.resize[1], spec.resize[0]), resample)
        elif len(spec.resize) == 1:
            width, height = image.size
            short = spec.resize[0]
            scale = short / min(width, height)
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), resample)
        if spec.crop is not None:
            crop_h, crop_w = spec.crop
            width, height = image.size
            if crop_w > width or crop_h > height:
                raise InvalidInput(f"image of {width}x{height} is smaller than the {crop_w}x{crop_h} crop")
            left, top = round((width - crop_w) / 2), round((height - crop_h) / 2)
            image = image.crop((left, top, left + crop_w, top + crop_h))
        return image
