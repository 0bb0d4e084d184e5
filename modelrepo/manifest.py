"""``manifest.json``: what a model version is made of and how it was produced.

The manifest is the contract between the optimizer (which writes it) and the server (which
refuses to load a version whose files do not match it). Unknown keys are preserved so newer
optimizers can add fields without breaking older servers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
_CHUNK = 1 << 20

#: Artifact formats a version may hold.
FORMATS = ("onnx", "openvino")


class ManifestError(ValueError):
    """The manifest is missing, unreadable or inconsistent with the files beside it."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large weights do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Manifest:
    """One model version's manifest.

    ``files`` maps a file name relative to the version directory to its SHA-256. ``model_file``
    names the file a runtime opens (``model.onnx`` or ``model.xml``). ``serve`` is false for a
    version the optimizer published but found no faster than the best FP32 way this host runs the
    source: the version policy skips it, a request may still name it (absent means true, so
    manifests written before the field existed keep serving).
    """

    format: str
    precision: str
    model_file: str
    files: dict[str, str]
    created_at: str = field(default_factory=utc_now)
    provenance: dict[str, Any] = field(default_factory=dict)
    parent_version: int | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    serve: bool = True
    schema: int = MANIFEST_SCHEMA

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ManifestError(f"unknown artifact format {self.format!r}; expected one of {FORMATS}")
        if self.model_file not in self.files:
            raise ManifestError(f"model_file {self.model_file!r} is not listed in files")
        if not isinstance(self.serve, bool):
            raise ManifestError(f"'serve' must be true or false, got {self.serve!r}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": self.schema,
            "format": self.format,
            "precision": self.precision,
            "model_file": self.model_file,
            "serve": self.serve,
            "files": dict(sorted(self.files.items())),
            "created_at": self.created_at,
            "provenance": self.provenance,
            "parent_version": self.parent_version,
            "optimizer": self.optimizer,
            "metrics": self.metrics,
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {
            "schema", "format", "precision", "model_file", "files", "created_at",
            "provenance", "parent_version", "optimizer", "metrics", "serve",
        }
        try:
            files = data["files"]
            if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()
            ):
                raise ManifestError("'files' must map file names to sha256 hex strings")
            return cls(
                schema=int(data.get("schema", MANIFEST_SCHEMA)),
                format=str(data["format"]),
                precision=str(data["precision"]),
                model_file=str(data["model_file"]),
                files=files,
                serve=data.get("serve", True),
                created_at=str(data.get("created_at", "")),
                provenance=dict(data.get("provenance") or {}),
                parent_version=data.get("parent_version"),
                optimizer=dict(data.get("optimizer") or {}),
                metrics=dict(data.get("metrics") or {}),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as missing:
            raise ManifestError(f"manifest lacks required key {missing.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"malformed manifest: {exc}") from None

    @classmethod
    def for_directory(cls, version_dir: Path, *, format: str, precision: str, model_file: str,
                      **fields: Any) -> Manifest:
        """Build a manifest hashing every regular file already in ``version_dir``."""
        files = {
            p.name: sha256_file(p)
            for p in sorted(version_dir.iterdir())
            if p.is_file() and p.name != MANIFEST_NAME
        }
        return cls(format=format, precision=precision, model_file=model_file, files=files, **fields)

    def write(self, version_dir: Path) -> Path:
        """Write the manifest atomically (temp file + rename + fsync)."""
        target = version_dir / MANIFEST_NAME
        tmp = target.with_suffix(".json.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
        return target


def read_manifest(version_dir: Path) -> Manifest:
    path = version_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object")
    return Manifest.from_dict(data)


def is_servable(version_dir: Path) -> bool:
    """The manifest's ``serve`` flag; an unreadable manifest counts as servable, so the server
    still selects that version and reports why it cannot load instead of silently skipping it."""
    try:
        return read_manifest(version_dir).serve
    except ManifestError:
        return True


def verify_files(version_dir: Path, manifest: Manifest) -> list[str]:
    """Return one problem line per file that is missing or whose hash differs (empty = intact)."""
    problems: list[str] = []
    for name, expected in sorted(manifest.files.items()):
        path = version_dir / name
        if Path(name).name != name:
            problems.append(f"{name}: file names must not contain directories")
            continue
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{name}: sha256 {actual[:12]}… does not match manifest {expected[:12]}…")
    return problems
