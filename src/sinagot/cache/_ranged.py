"""A big file in parallel byte ranges, hashed in order as its ranges complete.

One HTTP stream is often capped well below what the server and the network can
give (a proxy, a per-connection limit, TCP on a long path); a verified download
cannot go faster than one core hashes MD5, but it need not go slower either. A
file of at least :data:`RANGED_MIN` bytes starts as one stream; if its first
:data:`PART` came slower than :data:`SLOW_STREAM` times one core's MD5 rate, the
rest is fetched as :data:`PART`-sized ranges, :data:`PARTS_AT_ONCE` at a time,
each written at its offset of the part file; one task hashes the file from its
start as the ranges complete, reading back what was written (still in the page
cache). The hashed prefix is the resume point: every
``checkpoint`` bytes it is made durable and recorded, as for a streamed file.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from .._aio import first_error, run_to_completion
from ._remote_files import FileSource, RemoteFile

__all__ = [
    "PART",
    "PARTS_AT_ONCE",
    "RANGED_MIN",
    "RangeMismatch",
    "first_part",
    "one_stream_is_slow",
    "receive_ranged",
]

RANGED_MIN = 128 << 20
PART = 32 << 20
PARTS_AT_ONCE = 4
# One stream that brings a file slower than this fraction of one core's MD5 rate is
# capped somewhere on its way: the rest of the file comes in parallel ranges. A faster
# one keeps going alone (on a fast link, ranges cost more than they give: reading
# every byte back to hash it, several streams sharing the cores).
SLOW_STREAM = 0.5
_RATE_SAMPLE = 8 << 20
# Bytes of a range kept in memory before they are written at their offset.
_WRITE_AT = 1 << 20
_READ_BACK = 1 << 20


@functools.cache
def _md5_rate() -> float:
    """Bytes per second one core hashes with MD5 (measured once, in a thread)."""
    data = bytes(_RATE_SAMPLE)
    digest = hashlib.md5(usedforsecurity=False)
    started = time.perf_counter()
    digest.update(data)
    return _RATE_SAMPLE / max(time.perf_counter() - started, 1e-9)


def first_part(size: int) -> int:
    """How much of a big file comes as one stream before its rate is judged."""
    return min(size, PART)


async def one_stream_is_slow(received: int, seconds: float) -> bool:
    """Whether ``received`` bytes in ``seconds`` on one stream call for ranges."""
    rate = received / max(seconds, 1e-9)
    return rate < SLOW_STREAM * await run_to_completion(_md5_rate)


class RangeMismatch(Exception):
    """A range did not come as asked (more or fewer bytes): the file starts over."""


def _pwrite_chunks(fd: int, chunks: list[bytes], offset: int) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


def _hash_range(fd: int, digest: Any, start: int, end: int) -> None:
    position = start
    while position < end:
        data = os.pread(fd, min(_READ_BACK, end - position), position)
        if not data:
            raise RangeMismatch(f"the part file ends at byte {position}, before {end}")
        digest.update(data)
        position += len(data)


async def _fetch_range(
    fd: int, source: FileSource, file: RemoteFile, start: int, end: int, flush_interval: float
) -> None:
    position = start
    pending: list[bytes] = []
    pending_bytes = 0
    flushed_at = asyncio.get_running_loop().time()
    chunks = source.stream(file, start, end)
    try:
        async for chunk in chunks:
            if position + pending_bytes + len(chunk) > end:
                raise RangeMismatch(f"range {start}-{end} of {file.name} came longer")
            pending.append(chunk)
            pending_bytes += len(chunk)
            now = asyncio.get_running_loop().time()
            # Bytes reaching the part file are also the progress other processes watch.
            if pending_bytes >= _WRITE_AT or now - flushed_at >= flush_interval:
                await run_to_completion(_pwrite_chunks, fd, pending, position)
                position += pending_bytes
                pending, pending_bytes, flushed_at = [], 0, now
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    await run_to_completion(_pwrite_chunks, fd, pending, position)
    position += pending_bytes
    if position != end:
        raise RangeMismatch(f"range {start}-{end} of {file.name} came {position - start} bytes")


async def receive_ranged(
    fd: int,
    file: RemoteFile,
    source: FileSource,
    offset: int,
    digest: Any,
    *,
    flush_interval: float,
    checkpoint: int,
    record: Callable[[int, str], None],
) -> None:
    """Fetch ``file`` from ``offset`` (``digest`` holds the hash of what is before) into
    the part file ``fd`` (open for reading and writing); ``record(offset, prefix_md5)``
    makes a hashed prefix durable, in a thread, every ``checkpoint`` bytes."""
    ranges = [(start, min(start + PART, file.size)) for start in range(offset, file.size, PART)]
    finished = [asyncio.Event() for _ in ranges]
    slots = asyncio.Semaphore(PARTS_AT_ONCE)

    async def fetch(index: int, start: int, end: int) -> None:
        async with slots:
            await _fetch_range(fd, source, file, start, end, flush_interval)
        finished[index].set()

    async def hash_in_order() -> None:
        checkpointed = offset
        for (start, end), done in zip(ranges, finished, strict=True):
            await done.wait()
            await run_to_completion(_hash_range, fd, digest, start, end)
            if end - checkpointed >= checkpoint and end < file.size:
                await run_to_completion(record, end, digest.copy().hexdigest())
                checkpointed = end

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(hash_in_order())
            for index, (start, end) in enumerate(ranges):
                group.create_task(fetch(index, start, end))
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
