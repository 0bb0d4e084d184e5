"""Directory layout of the repository: integer version folders, published atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def list_versions(model_dir: Path) -> list[int]:
    """Integer version folders under ``model_dir``, ascending. Staging folders are ignored."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    versions = list_versions(model_dir)
    return (versions[-1] + 1) if versions else 1


def publish_version(model_dir: Path, staging_dir: Path, version: int | None = None) -> Path:
    """Move a fully written ``staging_dir`` into place as ``model_dir/<version>``.

    ``rename`` within one filesystem is atomic, so a server scanning the repository sees either
    no version or a complete one, never a half-written folder. The staging folder must therefore
    live on the same filesystem (use :func:`staging_directory`).
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    target_version = version if version is not None else next_version(model_dir)
    target = model_dir / str(target_version)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    # mkdtemp creates 0700 folders; a published version must be readable by the service user.
    staging_dir.chmod(0o755)
    _fsync_tree(staging_dir)
    staging_dir.rename(target)
    _fsync_dir(model_dir)
    return target


@contextmanager
def staging_directory(model_dir: Path) -> Iterator[Path]:
    """A temporary folder beside the versions (same filesystem); removed unless published."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in root.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
