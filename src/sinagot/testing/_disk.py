"""Where the emulator keeps file bytes: a folder per resource, and a folder for uploads.

A file is written and hashed under a temporary name first; the store renames it
into place once its index row can be written with it. Every stored file is also
linked into the archive tree XNAT keeps (``archive/<project>/arc001/<session>/SCANS/
<scan>/<resource>/...``), which readers of XNAT's file system (the Container
Service's mounts) read directly; it changes with every write.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from sinagot._names import NAME_MAX, byte_length

from ._records import StagedFile

__all__ = ["FileArea", "Readable"]

_CHUNK = 1024 * 1024


class Readable(Protocol):
    """A binary stream to copy from: a file, a response body, an archive member."""

    def read(self, size: int, /) -> bytes: ...


class FileArea:
    """The ``files``, ``archive`` and ``tmp`` folders of one data directory."""

    def __init__(self, root: Path) -> None:
        self._files_dir = root / "files"
        self._tmp_dir = root / "tmp"
        self.archive_dir = root / "archive"
        #: False when the data directory had no archive tree yet (an older emulator's).
        self.had_archive = self.archive_dir.is_dir()
        self._files_dir.mkdir(parents=True, exist_ok=True)
        self.archive_dir.mkdir(exist_ok=True)
        # Leftovers of uploads interrupted by a crash are never visible, so drop them.
        shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self._tmp_dir.mkdir(parents=True, exist_ok=True)

    def new_upload(self) -> Path:
        """A fresh temporary path for an upload, in the same file system as the files."""
        return self._tmp_dir / f"{uuid.uuid4().hex}.part"

    def write_upload(self, path: str, source: bytes | Path | Readable) -> StagedFile:
        """Copy ``source`` (bytes, a local file or a readable stream) to a fresh upload.

        The result is staged to become ``path`` of a resource, with the size and the MD5
        hex digest of what was written. Nothing is left behind if reading fails.
        """
        temp = self.new_upload()
        hasher = hashlib.md5()
        size = 0
        try:
            with temp.open("wb") as out:
                for chunk in _chunks(source):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return StagedFile(path, temp, size, hasher.hexdigest())

    def path(self, resource_id: int, path: str) -> Path:
        """Where the file ``path`` of resource ``resource_id`` lives."""
        return self._files_dir.joinpath(str(resource_id), *map(_disk_part, path.split("/")))

    def remove_resource(self, resource_id: int) -> None:
        shutil.rmtree(self._files_dir / str(resource_id), ignore_errors=True)

    # -- the archive tree --------------------------------------------------------------

    def archive_path(self, folder: Sequence[str], path: str = "") -> Path:
        """Where ``path`` of the resource whose archive folder is ``folder`` appears."""
        parts = [*map(_archive_part, folder), *map(_disk_part, filter(None, path.split("/")))]
        return self.archive_dir.joinpath(*parts)

    def publish(self, folder: Sequence[str], path: str, stored: Path) -> None:
        """Show the stored file ``stored`` as ``path`` in the archive folder ``folder``.

        A hard link (a copy where the file system has none), put in place by a rename:
        a reader of the archive sees the old file or the new one, never a part.
        """
        target = self.archive_path(folder, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = self.new_upload()
        try:
            os.link(stored, temp)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copyfile(stored, temp)
        try:
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def withdraw(self, folder: Sequence[str], path: str = "") -> None:
        """Remove ``path`` (or the whole folder) from the archive, and folders left empty."""
        target = self.archive_path(folder, path)
        if path:
            target.unlink(missing_ok=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
        parent = target.parent
        while parent != self.archive_dir and parent.is_relative_to(self.archive_dir):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _disk_part(part: str) -> str:
    # A real XNAT may keep its archive where names have other limits (NTFS counts 255 UTF-16
    # units, an object store none), so it can list names this machine cannot hold as they are.
    if byte_length(part) <= NAME_MAX:
        return part
    return hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest() + ".long"


def _archive_part(name: str) -> str:
    # Labels and IDs name folders here: none may climb out of the archive or hide in it.
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest() + ".name"
    return _disk_part(name)


def _chunks(source: bytes | Path | Readable) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield from _chunks(stream)
        return
    while chunk := source.read(_CHUNK):
        yield chunk
