"""Unpacking an uploaded archive into a resource, as XNAT does with ``extract=true``.

xnatpy's ``upload_dir`` (which FrameTree uses) sends one ``upload.tar.gz``;
other tools send a zip. Every regular member becomes a file of the resource
under its path in the archive. The archive comes from a client, so nothing in
it is trusted: absolute paths, ``..``, links and special files refuse the whole
upload, and the member count and the unpacked bytes are bounded (a small
archive can unpack to terabytes).
"""

from __future__ import annotations

import gzip
import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Literal

from sinagot.errors import EmulatorError

from ._disk import FileArea, Readable
from ._records import StagedFile, safe_relative_path

__all__ = ["ArchiveError", "ExtractLimits", "archive_kind", "extract_archive"]

ArchiveKind = Literal["zip", "tar"]

_SUFFIXES: tuple[tuple[str, ArchiveKind], ...] = (
    (".zip", "zip"),
    (".tar", "tar"),
    (".tar.gz", "tar"),
    (".tgz", "tar"),
)


class ArchiveError(EmulatorError):
    """An uploaded archive is unreadable, unsafe or too large to unpack."""


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Bounds on one unpacked upload: regular members, and their bytes all together.

    The defaults hold a large derivative (tens of thousands of DICOM slices would not
    fit, and do not come through ``upload_dir``) while a hostile archive is refused
    long before it fills the disk.
    """

    max_members: int = 10_000
    max_bytes: int = 8 << 30

    def __post_init__(self) -> None:
        if self.max_members < 1 or self.max_bytes < 0:
            raise ValueError(
                f"extract limits {self.max_members} members, {self.max_bytes} bytes:"
                " use at least 1 member and 0 bytes"
            )


def archive_kind(name: str) -> ArchiveKind | None:
    """The kind of archive ``name`` is by its suffix (how XNAT decides), or None."""
    lowered = name.lower()
    return next((kind for suffix, kind in _SUFFIXES if lowered.endswith(suffix)), None)


def extract_archive(
    disk: FileArea, archive: Path, name: str, kind: ArchiveKind, limits: ExtractLimits
) -> list[StagedFile]:
    """Stage every regular member of ``archive`` (uploaded as ``name``) as a new upload.

    All or nothing: on any refusal the files staged so far are removed and
    :class:`ArchiveError` says which member and why.
    """
    staged: list[StagedFile] = []
    seen: set[str] = set()
    budget = _Budget(limits.max_bytes)
    members = _zip_members if kind == "zip" else _tar_members
    try:
        for member_name, opener in members(archive, name):
            try:
                path = safe_relative_path(member_name)
            except ValueError as exc:
                raise ArchiveError(
                    f"{name}: member {member_name!r} would be stored outside its resource:"
                    " use relative paths without '..'"
                ) from exc
            if path in seen:
                raise ArchiveError(f"{name}: member {path!r} appears twice: keep one")
            seen.add(path)
            if len(seen) > limits.max_members:
                raise ArchiveError(
                    f"{name} has more than {limits.max_members} files: upload it in parts"
                )
            with opener() as source:
                staged.append(disk.write_upload(path, _BoundedReader(source, budget, name)))
    except _UNREADABLE as exc:
        _discard(staged)
        raise ArchiveError(
            f"{name} is not a readable {kind} archive ({exc}): send it again"
        ) from exc
    except BaseException:
        _discard(staged)
        raise
    return staged


_Opener = Callable[[], IO[bytes]]
# What a truncated or corrupt archive raises while it is read (a full disk is an OSError
# too, but not one of these).
_UNREADABLE = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


def _zip_members(archive: Path, name: str) -> Iterator[tuple[str, _Opener]]:
    with zipfile.ZipFile(archive) as opened:
        for info in opened.infolist():
            if info.is_dir():
                continue
            # Unix zips keep the file type in the high bits; 0 means a plain file.
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if file_type not in (0, stat.S_IFREG):
                what = "a link" if file_type == stat.S_IFLNK else "a special file"
                raise ArchiveError(f"{name}: member {info.filename!r} is {what}: store files only")
            yield info.filename, partial(opened.open, info)


def _tar_members(archive: Path, name: str) -> Iterator[tuple[str, _Opener]]:
    with tarfile.open(archive, mode="r:*") as opened:
        for member in opened:
            if member.isdir():
                continue
            if not member.isreg():
                what = "a link" if member.issym() or member.islnk() else "a special file"
                raise ArchiveError(f"{name}: member {member.name!r} is {what}: store files only")
            yield member.name, partial(_tar_open, opened, member)


def _tar_open(opened: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    source = opened.extractfile(member)
    assert source is not None  # a regular member always has a body
    return source


class _Budget:
    """The unpacked bytes one archive may still produce."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit


class _BoundedReader:
    """A read-only stream over an archive member that stops the upload past the budget."""

    def __init__(self, source: Readable, budget: _Budget, name: str) -> None:
        self._source = source
        self._budget = budget
        self._name = name

    def read(self, size: int, /) -> bytes:
        # One byte past what is left tells a member that fits exactly from one that does not.
        chunk = self._source.read(min(size, self._budget.left + 1))
        self._budget.left -= len(chunk)
        if self._budget.left < 0:
            raise ArchiveError(
                f"{self._name} unpacks to more than {self._budget.limit} bytes: upload it in parts"
            )
        return chunk


def _discard(staged: list[StagedFile]) -> None:
    for item in staged:
        item.temp.unlink(missing_ok=True)
