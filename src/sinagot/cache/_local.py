"""A file source reading a local folder: for tests, benchmarks and file-system mirrors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ._types import RemoteFile

__all__ = ["LocalFileSource"]


class LocalFileSource:
    """Serves ``root/<file.name>`` as a :class:`FileSource`, with ranges."""

    supports_range = True

    def __init__(self, root: Path, *, chunk_size: int = 1 << 20) -> None:
        self.root = root
        self.chunk_size = chunk_size

    async def stream(self, file: RemoteFile, offset: int) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread((self.root / file.name).open, "rb")
        try:
            handle.seek(offset)
            while chunk := await asyncio.to_thread(handle.read, self.chunk_size):
                yield chunk
        finally:
            handle.close()
