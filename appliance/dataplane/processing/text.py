"""Text in: UTF-8 strings → the token tensors a version's encoder takes (``tokenizers``, no torch).

The version's manifest says how (``preprocessing.kind = "text"``, written by the optimizer): its
``tokenizer.json`` (a file of the version, so covered by its hashes), the truncation length and
``padding = "longest"``. Truncation is set explicitly because the file's own setting may differ
from the library the model was trained with (all-MiniLM-L6-v2 ships 128, sentence-transformers
uses 256). A request is padded only to its own longest sentence; the batcher pads the rows of
several requests to the batch's longest (its pad axes), never to ``max_length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import InvalidInput, LimitExceeded

#: Model inputs this step can fill, and the value a padded position takes in each.
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_CHARS = 100_000  # per string: the tokenizer's cost grows with the text, not the tokens kept


@dataclass(frozen=True, slots=True)
class TextSpec:
    tokenizer: str
    max_length: int
    model_inputs: tuple[str, ...]
    max_chars: int = DEFAULT_MAX_CHARS

    @classmethod
    def from_manifest(cls, raw: dict[str, Any]) -> TextSpec:
        tokenizer, max_length = raw.get("tokenizer"), raw.get("max_length")
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ValueError("text preprocessing needs 'tokenizer' (a file of the version)")
        if type(max_length) is not int or max_length < 2:
            raise ValueError("text preprocessing needs 'max_length' >= 2")
        if raw.get("padding", "longest") != "longest":
            raise ValueError("text preprocessing supports padding = 'longest' only")
        inputs = tuple(str(name) for name in raw.get("inputs", ("input_ids", "attention_mask")))
        unknown = [name for name in inputs if name not in TOKEN_INPUTS]
        if unknown or "input_ids" not in inputs:
            raise ValueError(f"text preprocessing fills {', '.join(TOKEN_INPUTS)} (needs input_ids), "
                             f"not {', '.join(unknown) or 'nothing'}")
        return cls(tokenizer, max_length, inputs, int(raw.get("max_chars", DEFAULT_MAX_CHARS)))


class TextEncoder:
    """One version's tokenizer, configured once; ``encode`` runs in a worker thread."""

    def __init__(self, spec: TextSpec, folder: Path) -> None:
        try:
            from tokenizers import Tokenizer  # imported here: a server without text models never loads it
        except ImportError:
            raise ValueError("text preprocessing needs the 'tokenizers' package") from None

        self.spec = spec
        tokenizer = Tokenizer.from_file(str(folder / spec.tokenizer))
        tokenizer.enable_truncation(max_length=spec.max_length)
        padding = tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token=str(padding.get("pad_token", "[PAD]")), length=None)
        self._tokenizer = tokenizer

    @property
    def pad_values(self) -> dict[str, int]:
        """What the batcher writes into a padded position of each token tensor."""
        values = {"input_ids": self.pad_id, "attention_mask": 0, "token_type_ids": 0}
        return {name: values[name] for name in self.spec.model_inputs}

    def encode(self, texts: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        """INT64 ``[rows, longest]`` tensors for the model's inputs, and the number of real tokens."""
        strings = [self._decode(item) for item in texts.reshape(-1)]
        encoded = self._tokenizer.encode_batch(strings) if len(strings) > 1 else [self._tokenizer.encode(strings[0])]
        arrays = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        }
        if "token_type_ids" in self.spec.model_inputs:
            arrays["token_type_ids"] = np.array([e.type_ids for e in encoded], dtype=np.int64)
        tokens = int(arrays["attention_mask"].sum())
        return {name: arrays[name] for name in self.spec.model_inputs}, tokens

    def _decode(self, item: object) -> str:
        raw = item if isinstance(item, bytes) else str(item).encode()
        if len(raw) > self.spec.max_chars * 4:
            raise LimitExceeded(f"a text of {len(raw)} bytes is over the limit of {self.spec.max_chars} characters")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"text input is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if len(text) > self.spec.max_chars:
            raise LimitExceeded(f"a text of {len(text)} characters is over the limit of {self.spec.max_chars}")
        return text
