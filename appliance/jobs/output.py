"""The output folder of a job: one Parquet part per committed chunk, rejects beside it, a journal.

::

    OUTPUT/part-000000.parquet ...        row_id, one column per model output, model, version
    OUTPUT/_rejects/part-000000.parquet   row_id, reason (only for chunks that had bad rows)
    OUTPUT/_journal.json                  what the job is (model, pinned manifest hash, input) and
                                          how far it got (chunks, rows, digests so far)

A chunk is committed by writing its files under temporary names, fsyncing them, renaming them
into place, then replacing the journal the same way (write, fsync, rename, fsync the folder).
The journal is the only truth: after kill -9, a part file the journal does not count was not
committed and is removed on ``--resume``, so every input row appears exactly once. Files named
``_*`` are ignored by pyarrow datasets, so ``pyarrow.parquet.read_table(OUTPUT)`` reads the
predictions alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

JOURNAL = "_journal.json"
REJECTS = "_rejects"
JOURNAL_SCHEMA = 1


class OutputError(ValueError):
    """The output folder cannot be used: not empty without --resume, or written by another job."""


@dataclass
class Progress:
    """How far the job got; saved in the journal with every committed chunk."""

    chunks: int = 0
    rows_done: int = 0  # input rows consumed: predicted + rejected
    rows_ok: int = 0
    rows_rejected: int = 0
    input_sha256: str = ""  # chained over the chunks: sha256(previous + chunk digest)
    output_sha256: str = ""
    done: bool = False


@dataclass
class Journal:
    identity: dict[str, Any]  # model, version, manifest_sha256, input, columns: must match on resume
    progress: Progress = field(default_factory=Progress)

    def to_json(self) -> bytes:
        return json.dumps({"schema": JOURNAL_SCHEMA, "job": self.identity, "progress": asdict(self.progress)},
                          indent=1, sort_keys=True).encode()


def chain(previous: str, chunk_digest: str) -> str:
    return hashlib.sha256(f"{previous}:{chunk_digest}".encode()).hexdigest()


class OutputFolder:
    def __init__(self, path: Path, journal: Journal) -> None:
        self.path = path
        self.journal = journal

    @classmethod
    def open(cls, path: Path, identity: dict[str, Any], resume: bool) -> OutputFolder:
        """A new job's folder (must be absent or empty), or a resumed one (same identity)."""
        journal_path = path / JOURNAL
        if resume and journal_path.exists():
            saved = json.loads(journal_path.read_text())
            if saved.get("job") != identity:
                diff = sorted(k for k in identity.keys() | saved.get("job", {}).keys()
                              if identity.get(k) != saved.get("job", {}).get(k))
                raise OutputError(f"{path} holds another job (differs in: {', '.join(diff)}); not resuming")
            folder = cls(path, Journal(identity, Progress(**saved["progress"])))
            folder._remove_uncommitted()
            return folder
        if path.exists() and any(path.iterdir()):
            raise OutputError(f"output {path} is not empty; pass --resume to continue the job it holds")
        (path / REJECTS).mkdir(parents=True, exist_ok=True)
        folder = cls(path, Journal(identity))
        _replace(path / JOURNAL, folder.journal.to_json())
        return folder

    def _remove_uncommitted(self) -> None:
        """Parts a killed run wrote after its last journal update, and temporary files."""
        committed = self.journal.progress.chunks
        for folder in (self.path, self.path / REJECTS):
            for item in folder.glob("part-*"):
                if item.name.endswith(".tmp") or _index(item) >= committed:
                    item.unlink()

    def commit(self, table: pa.Table, rejects: pa.Table | None, rows: int,
               input_digest: str, output_digest: str) -> None:
        """Make one chunk durable: its parts, then the journal that counts them."""
        progress = self.journal.progress
        name = f"part-{progress.chunks:06d}.parquet"
        if table.num_rows:
            _write_parquet(table, self.path / name)
        if rejects is not None and rejects.num_rows:
            _write_parquet(rejects, self.path / REJECTS / name)
            _fsync_directory(self.path / REJECTS)  # the journal's rename below fsyncs only the output folder
        progress.chunks += 1
        progress.rows_done += rows
        progress.rows_ok += table.num_rows
        progress.rows_rejected += rejects.num_rows if rejects is not None else 0
        progress.input_sha256 = chain(progress.input_sha256, input_digest)
        progress.output_sha256 = chain(progress.output_sha256, output_digest)
        _replace(self.path / JOURNAL, self.journal.to_json())

    def finish(self) -> None:
        self.journal.progress.done = True
        _replace(self.path / JOURNAL, self.journal.to_json())


def _index(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return 1 << 60  # not ours: treat as uncommitted


def _write_parquet(table: pa.Table, target: Path) -> None:
    temporary = target.with_name(target.name + ".tmp")
    with temporary.open("wb") as handle:
        # Dictionary-encode only the constant columns: tried on float outputs, the dictionary was
        # most of the write (0.82 against 0.16 µs a row for 10 floats, measured).
        dictionary = [name for name in ("model", "model_version") if name in table.column_names]
        pq.write_table(table, handle, compression="zstd", use_dictionary=dictionary)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def _replace(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically and durably (the rename is fsynced too)."""
    temporary = target.with_name(target.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    _fsync_directory(target.parent)


def _fsync_directory(path: Path) -> None:
    """Make the renames inside ``path`` durable."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
