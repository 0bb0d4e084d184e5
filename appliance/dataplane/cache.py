"""Local prediction cache: LRU with a byte budget and a time to live.

The key is a BLAKE2b digest of the model name, the *resolved* version (and its load time, so
a reloaded version never serves an old entry), the requested outputs and the SHA-256 of every
input's name, datatype, shape and bytes (``service.tensor_digest``, computed once per request and
shared with the audit record) — never the request JSON, whose ``id`` would defeat it. Only
successful outputs are stored; each entry remembers the version that produced it, so the entries
of a version are dropped at once when it stops being served (``drop``).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

Outputs = dict[str, np.ndarray]


@dataclass(slots=True)
class _Entry:
    outputs: Outputs
    nbytes: int
    expires: float
    owner: object


def cache_key(model: str, version: str, generation: float, outputs: Iterable[str] | None,
              inputs_sha256: str) -> bytes:
    """``inputs_sha256``: ``service.tensor_digest`` of the request's inputs."""
    outputs_part = "\0".join(sorted(outputs)) if outputs is not None else "*"
    text = f"{model}\0{version}\0{generation!r}\0{outputs_part}\0{inputs_sha256}"
    return hashlib.blake2b(text.encode(), digest_size=32).digest()


class PredictionCache:
    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Outputs | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= time.monotonic():
            self._remove(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.outputs

    def put(self, key: bytes, outputs: Outputs, owner: object = None) -> None:
        """Store ``outputs``; ``owner`` (e.g. the model version) is what ``drop`` removes them by."""
        nbytes = sum(a.nbytes for a in outputs.values()) + 64 * len(outputs) + 128
        if nbytes > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        # Store private read-only copies: batch slices are views into a shared array.
        frozen = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            frozen[name] = copy
        self._entries[key] = _Entry(frozen, nbytes, time.monotonic() + self.ttl_s, owner)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def drop(self, owner: object) -> int:
        """Remove every entry ``owner`` produced (a version that stopped serving); returns how many."""
        keys = [key for key, entry in self._entries.items() if entry.owner is owner]
        for key in keys:
            self._remove(key)
        return len(keys)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
