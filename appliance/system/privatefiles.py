"""Writing secrets and stores (keys, key rings, API-key hashes, sealed artifacts): atomically, mode 0600
from the first byte. Shared by audit, auth and artifact encryption."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically (temp file in the same folder, fsync, rename, fsync the folder).

    ``mkstemp`` creates the file with mode 0600, so there is no moment where it is readable by
    others; readers see the old or the new content, never half of it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
