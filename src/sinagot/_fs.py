"""File-system helpers for crash-safe writes, shared by every package.

Nothing is ever visible under its final name half-written: data goes to a
temporary name in the same directory, is fsynced, renamed over the final
name, and the directory is fsynced so the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "CHUNK_SIZE",
    "atomic_copy",
    "atomic_write_bytes",
    "fsync_dir",
    "link_or_copy",
    "md5_file",
]

CHUNK_SIZE = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (e.g. a rename) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_replace(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` by what ``write`` puts in a temporary file beside it, durably:
    readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    _atomic_replace(path, lambda handle: handle.write(data))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` so that readers see the old or the new file, never a mix."""
    with source.open("rb") as original:
        _atomic_replace(path, lambda handle: shutil.copyfileobj(original, handle, CHUNK_SIZE))


def md5_file(path: Path) -> str:
    """MD5 hex digest of a file, read in bounded chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def link_or_copy(source: Path, destination: Path) -> None:
    """Put ``source`` at ``destination`` atomically: a hard link, or a copy across file systems."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(source, destination):
            return
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, temporary)
        except OSError:
            # Another file system, or links not allowed: copy instead.
            shutil.copy2(source, temporary)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
