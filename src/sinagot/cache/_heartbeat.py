"""A download's heartbeat: the holder of an entry tells waiters it is alive, though silent.

A server may answer nothing for seconds before a file's first byte (real XNAT
does, building an archive or under load). While a request of the download waits
like that, the holder touches its lock file (:meth:`EntryLock.beat`), so waiters
do not take it for stalled; bytes arriving in its staging files tell them the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ._lock import EntryLock
from ._remote_files import ArchiveSource, FileSource, RemoteFile

__all__ = ["NetworkWaits", "heartbeat"]


class NetworkWaits:
    """How many requests of a download are waiting for their next bytes from the server."""

    def __init__(self) -> None:
        self.waiting = 0

    def watch(self, source: FileSource) -> FileSource:
        if isinstance(source, ArchiveSource):
            return _WatchedArchiveSource(source, self)
        return _WatchedSource(source, self)

    async def counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, counted as waiting on the server between two of them."""
        iterator = aiter(chunks)
        try:
            while True:
                self.waiting += 1
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                finally:
                    self.waiting -= 1
                yield chunk
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()


class _WatchedSource:
    """``source``, counting its streams while they wait on the server (see :func:`heartbeat`)."""

    def __init__(self, source: FileSource, waits: NetworkWaits) -> None:
        self.supports_range = source.supports_range
        self._source = source
        self._waits = waits

    def stream(self, file: RemoteFile, offset: int, end: int | None = None) -> AsyncIterator[bytes]:
        return self._waits.counted(self._source.stream(file, offset, end))


class _WatchedArchiveSource(_WatchedSource):
    """An archive-capable ``source``, its archive counted too."""

    def __init__(self, source: ArchiveSource, waits: NetworkWaits) -> None:
        super().__init__(source, waits)
        self._archive_source = source

    def archive(self) -> AsyncIterator[bytes]:
        return self._waits.counted(self._archive_source.archive())


async def heartbeat(
    lock: EntryLock, waits: NetworkWaits, interval: float, committed: Callable[[], Path | None]
) -> Path:
    """Heartbeat while requests wait on the server; return another holder's commit once seen."""
    while True:
        await asyncio.sleep(interval)
        if waits.waiting:
            await asyncio.to_thread(lock.beat)
        found = await asyncio.to_thread(committed)
        if found is not None:
            return found
