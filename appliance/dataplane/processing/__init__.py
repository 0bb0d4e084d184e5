"""Pre- and post-processing declared by a model version: requests in people's terms (strings,
image files) → the model's tensors, and the model's outputs → answers (labels).

A version's ``manifest.json`` holds a ``preprocessing`` table (``kind = "text" | "image"``) and,
for classifiers, ``postprocessing.labels`` naming a file of the version (one label per line). The
files a step needs must be listed in the manifest, so they are covered by its hashes: a new version
changes model and processing together. Without a labels file, ``model.toml``'s ``labels`` apply.

Steps run in a small dedicated thread pool, never on the event loop. Per request, handing work to
that pool costs less than ``asyncio.to_thread`` (no context copy; measured in
``bench/processing_offload.py``). A request may still send the model's own tensors: the public
input (``text``, ``image``) is used only when the request names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from appliance.dataplane.processing.classification import classify
from appliance.dataplane.processing.image import ImageDecoder, ImageSpec
from appliance.dataplane.processing.text import TextEncoder, TextSpec

__all__ = ["Processing", "build_processing", "classify"]

_POOL: ThreadPoolExecutor | None = None
POOL_THREADS = 4  # decode/tokenize are short: a few threads keep every core busy without oversubscribing


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="appliance-processing")
    return _POOL


class Step(Protocol):
    def encode(self, items: np.ndarray) -> tuple[dict[str, np.ndarray], int]: ...


@dataclass(frozen=True)
class Processing:
    """One version's steps: the public input they read and the model inputs they fill."""

    kind: str
    public_input: str
    step: Step | None
    #: model input → (axis, pad value): tensors the batcher may pad to the batch's longest row.
    pad_axes: Mapping[str, tuple[int, int | float]]
    labels: tuple[str, ...] = ()

    def applies(self, names: Any) -> bool:
        """Whether a request with these input names is in the public form (strings, image files)."""
        return self.step is not None and self.public_input in names

    async def prepare(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """The model's tensors for a request in public form, and the tokens it held (text)."""
        if self.step is None:
            return inputs, 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pool(), self.step.encode, inputs[self.public_input])


def build_processing(folder: Path, manifest_extra: Mapping[str, Any], files: Mapping[str, str],
                     config_labels: tuple[str, ...]) -> Processing | None:
    """The steps a version declares; None when it declares none. Raises ValueError when the
    declaration is wrong or names a file the manifest does not cover (the version is refused)."""
    pre = manifest_extra.get("preprocessing")
    post = manifest_extra.get("postprocessing") or {}
    labels = _labels(folder, post, files) or config_labels
    if pre is None:
        return Processing("none", "", None, {}, labels) if labels else None
    if not isinstance(pre, dict):
        raise ValueError("manifest 'preprocessing' must be a table")
    kind = pre.get("kind")
    public = str(pre.get("input", "text" if kind == "text" else "image"))
    if kind == "text":
        spec = TextSpec.from_manifest(pre)
        _covered(spec.tokenizer, files)
        encoder = TextEncoder(spec, folder)
        return Processing("text", public, encoder, {name: (1, v) for name, v in encoder.pad_values.items()}, labels)
    if kind == "image":
        return Processing("image", public, ImageDecoder(ImageSpec.from_manifest(pre)), {}, labels)
    raise ValueError(f"manifest preprocessing kind {kind!r} is not 'text' or 'image'")


def _covered(name: str, files: Mapping[str, str]) -> None:
    if name not in files:
        raise ValueError(f"processing file {name!r} is not listed in the manifest (not covered by its hashes)")


def _labels(folder: Path, post: Any, files: Mapping[str, str]) -> tuple[str, ...]:
    if not isinstance(post, dict) or "labels" not in post:
        return ()
    name = str(post["labels"])
    _covered(name, files)
    lines = (folder / name).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())
