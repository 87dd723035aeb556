"""How the files of a derivative travel to XNAT: request bodies streamed from disk.

A file goes as the raw body of one PUT, by ``sendfile(2)`` where the connection allows
it (plain HTTP: the bytes never pass through Python) and in 1 MiB reads otherwise (TLS).
Many small files go as a few uncompressed tar archives PUT with ``extract=true``, as
xnatpy's ``upload_dir`` sends them: the server unpacks every member into the resource
and lists each one with its digest, so they are verified like single files, while one
request carries hundreds of them instead of each paying XNAT's cost per request (tens
of ms, more than a small file takes to send). Nothing is read whole into memory: a
body is produced while it is sent, anew for each try, one chunk at a time.
"""

from __future__ import annotations

import asyncio
import math
import tarfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from io import FileIO
from pathlib import Path

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from .._fs import CHUNK_SIZE
from ..errors import StoreError

__all__ = ["ArchiveBody", "FileBody", "UploadBody", "plan_uploads"]

# Smaller files go into archives: XNAT's 20-120 ms per request is the time 1-6 MB take
# at the 50 MB/s a single connection through its proxy gets.
ARCHIVE_MEMBER_MAX = 4 << 20
# Fewer members per archive gain little over sending them side by side.
ARCHIVE_MIN_MEMBERS = 32
# XNAT unpacks an archive before it answers: bounded, so that no proxy times out meanwhile.
ARCHIVE_MAX_MEMBERS = 1000
ARCHIVE_MAX_BYTES = 512 << 20

_BLOCK = tarfile.BLOCKSIZE
_END = tarfile.NUL * (2 * _BLOCK)


class UploadBody(ABC):
    """A request body of ``size`` bytes read from local files, sent again whole at each try."""

    def __init__(self, size: int) -> None:
        self.size = size

    def payload(self) -> Payload:
        """What aiohttp sends for one try."""
        return _BodyPayload(self)

    @abstractmethod
    async def send(self, writer: AbstractStreamWriter) -> None:
        """Write the whole body to ``writer``."""


class FileBody(UploadBody):
    """The bytes of one file."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(size)
        self.path = path

    async def send(self, writer: AbstractStreamWriter) -> None:
        source = await asyncio.to_thread(self.path.open, "rb", buffering=0)
        try:
            if not await _sendfile(writer, source, self.size, self.path):
                await _write_chunks(writer, source.readinto, self.size, self.path)
        finally:
            await asyncio.to_thread(source.close)


class ArchiveBody(UploadBody):
    """An uncompressed tar of files below ``root``: ``members`` are their names and sizes."""

    def __init__(self, root: Path, members: Sequence[tuple[str, int]]) -> None:
        mtime = int(time.time())
        parts: list[bytes | tuple[Path, int]] = []
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, mtime, 0o644
            # The format and encoding tarfile (and so xnatpy) writes: what XNAT reads.
            parts += [
                info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"),
                (root / name, size),
            ]
            if size % _BLOCK:
                parts.append(tarfile.NUL * (_BLOCK - size % _BLOCK))
        parts.append(_END)
        length = sum(len(p) if isinstance(p, bytes) else p[1] for p in parts)
        # Padded to whole records, as tarfile closes an archive.
        parts.append(tarfile.NUL * (-length % tarfile.RECORDSIZE))
        super().__init__(length + len(parts[-1]))
        self.root = root
        self._parts = tuple(parts)

    async def send(self, writer: AbstractStreamWriter) -> None:
        reader = _PartsReader(self._parts)
        try:
            await _write_chunks(writer, reader.readinto, self.size, self.root)
        finally:
            await asyncio.to_thread(reader.close)


def plan_uploads(
    names: Sequence[str], sizes: Mapping[str, int], slots: int
) -> tuple[list[str], list[list[str]]]:
    """``names`` split into files sent one per request and batches sent as archives.

    Archives pay only when there are more small files than requests sent at once
    (``slots``); then the small files are shared out among up to ``slots`` archives
    of about equal bytes, in name order, each within the bounds above.
    """
    small = [name for name in names if sizes[name] < ARCHIVE_MEMBER_MAX]
    if len(small) <= slots:
        return list(names), []
    alone = [name for name in names if sizes[name] >= ARCHIVE_MEMBER_MAX]
    # A member's header counts too, so that empty files still spread out.
    weight = {name: sizes[name] + _BLOCK for name in small}
    total = sum(weight.values())
    parts = max(
        min(slots, math.ceil(len(small) / ARCHIVE_MIN_MEMBERS)),
        math.ceil(len(small) / ARCHIVE_MAX_MEMBERS),
        math.ceil(total / ARCHIVE_MAX_BYTES),
    )
    batches: list[list[str]] = [[]]
    done = 0
    for name in small:
        current = batches[-1]
        if current and (
            len(current) >= ARCHIVE_MAX_MEMBERS or done >= total * len(batches) / parts
        ):
            batches.append(current := [])
        current.append(name)
        done += weight[name]
    return alone, batches


class _BodyPayload(Payload):
    """An :class:`UploadBody` as aiohttp sends it (its length known up front)."""

    _autoclose = True  # files are opened and closed within one write

    def __init__(self, body: UploadBody) -> None:
        super().__init__(body, content_type="application/octet-stream")
        self._body = body
        self._size = body.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an upload body is bytes read from files, not text")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self._body.send(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # Content-Length is always our own size (aiohttp takes it from the payload).
        await self._body.send(writer)


async def _sendfile(writer: AbstractStreamWriter, source: FileIO, size: int, path: Path) -> bool:
    """Send ``size`` bytes of ``source`` by sendfile(2); False, nothing sent, if it cannot."""
    transport = writer.transport
    if transport is None:
        raise ConnectionResetError("the connection closed before the body was sent")
    writer.send_headers()  # aiohttp holds them back to send with the first chunk
    await writer.drain()
    try:
        sent = await asyncio.get_running_loop().sendfile(transport, source, 0, size, fallback=False)
    except RuntimeError:
        # asyncio says so before sending anything: a TLS connection, or no sendfile here.
        return False
    if sent != size:
        raise _changed(path, size - sent)
    return True


async def _write_chunks(
    writer: AbstractStreamWriter,
    readinto: Callable[[bytearray], int | None],
    size: int,
    path: Path,
) -> None:
    left = size
    while left:
        # A fresh buffer each time: the transport may still hold the last one.
        buffer = bytearray(min(CHUNK_SIZE, left))
        count = await asyncio.to_thread(readinto, buffer)
        if not count:
            raise _changed(path, left)
        await writer.write(buffer if count == len(buffer) else memoryview(buffer)[:count])
        left -= count


def _changed(path: Path, missing: int) -> StoreError:
    return StoreError(
        f"{path} ended {missing} bytes short of its size when listed: it changed while it"
        " was uploaded; let whatever writes it finish, then upload again"
    )


class _PartsReader:
    """Byte strings and ``(path, size)`` file spans read as one stream (blocking).

    Each :meth:`readinto` fills the whole buffer if it can, across as many small files
    as fit, so a chunk of an archive costs one hop to a thread, not one per file.
    """

    def __init__(self, parts: Sequence[bytes | tuple[Path, int]]) -> None:
        self._parts: Iterator[bytes | tuple[Path, int]] = iter(parts)
        self._data = memoryview(b"")
        self._file: FileIO | None = None
        self._file_path = Path()
        self._file_left = 0

    def readinto(self, buffer: bytearray) -> int:
        view = memoryview(buffer)
        filled = 0
        while filled < len(view):
            if self._file is not None:
                count = self._file.readinto(view[filled : filled + self._file_left])
                if not count:
                    raise _changed(self._file_path, self._file_left)
                filled += count
                self._file_left -= count
                if not self._file_left:
                    self._close_file()
            elif self._data:
                count = min(len(self._data), len(view) - filled)
                view[filled : filled + count] = self._data[:count]
                self._data = self._data[count:]
                filled += count
            elif not self._next():
                break
        return filled

    def _next(self) -> bool:
        part = next(self._parts, None)
        if part is None:
            return False
        if isinstance(part, bytes):
            self._data = memoryview(part)
        elif part[1]:
            self._file_path, self._file_left = part
            self._file = self._file_path.open("rb", buffering=0)
        return True

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close_file()
