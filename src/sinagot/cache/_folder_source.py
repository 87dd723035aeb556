"""A file source reading a local folder: for tests, benchmarks and file-system mirrors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ._remote_files import RemoteFile

__all__ = ["LocalFileSource"]


class LocalFileSource:
    """Serves ``root/<file.name>`` as a :class:`FileSource`, with ranges."""

    supports_range = True

    def __init__(self, root: Path, *, chunk_size: int = 1 << 20) -> None:
        self.root = root
        self.chunk_size = chunk_size

    async def stream(
        self, file: RemoteFile, offset: int, end: int | None = None
    ) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread((self.root / file.name).open, "rb")
        try:
            handle.seek(offset)
            left = (end if end is not None else file.size) - offset
            while left > 0 and (
                chunk := await asyncio.to_thread(handle.read, min(self.chunk_size, left))
            ):
                left -= len(chunk)
                yield chunk
            # A file longer than listed shows as such (the cache checks the size).
            if end is None and (rest := await asyncio.to_thread(handle.read, self.chunk_size)):
                yield rest
        finally:
            handle.close()
