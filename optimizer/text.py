"""Calibration and eval data for text models: a UTF-8 file of sentences, one per line, tokenized here.

Tokenized with the ``tokenizers`` package from the model's own ``tokenizer.json`` (it alone
reproduces the ids the model was trained on), with truncation and padding set explicitly: the file's
own settings may differ from the library's (all-MiniLM-L6-v2 ships 128 where sentence-transformers
uses 256). Rows are padded to the longest sentence in the file, not to the maximum length: the
attention mask makes padding invisible to mean pooling, and short rows keep calibration cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelrepo import sha256_file
from optimizer.calibration import TensorData
from optimizer.errors import OptimizerError
from optimizer.hf import TextModel
from optimizer.specs import TensorSpec

TEXT_SUFFIXES = (".txt", ".text")


def is_text_file(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


def read_sentences(path: Path, role: str) -> list[str]:
    """Non-blank lines, stripped; a file without any is refused (nothing to calibrate on)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise OptimizerError(f"{role} data {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptimizerError(f"{role} data {path} is not a readable UTF-8 text file ({exc})") from None
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise OptimizerError(f"{role} data {path} holds no sentences (one per line expected)")
    return sentences


def tokenize(text: TextModel, sentences: Sequence[str]) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (INT64 [rows, longest])."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise OptimizerError("text data needs the 'tokenizers' package (pip install 'model-appliance[hf]')") from None
    tokenizer = Tokenizer.from_file(str(text.tokenizer))
    tokenizer.enable_truncation(max_length=text.max_length)
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(pad_id=int(padding.get("pad_id", 0)), pad_token=str(padding.get("pad_token", "[PAD]")),
                             length=None)
    encoded = tokenizer.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }


def load_text(path: Path, text: TextModel, specs: Sequence[TensorSpec], role: str) -> TensorData:
    """Tokenize the sentences in ``path`` into one array per model input."""
    arrays = tokenize(text, read_sentences(path, role))
    missing = [spec.name for spec in specs if spec.name not in arrays]
    if missing:
        raise OptimizerError(f"{role} data {path}: the model wants input(s) {', '.join(missing)}, which "
                             "text data cannot supply; give an .npz with one array per input")
    inputs = {spec.name: arrays[spec.name].astype(spec.dtype, copy=False) for spec in specs}
    rows = next(iter(inputs.values())).shape[0]
    return TensorData(path, sha256_file(path), inputs, None, int(rows))
