"""Response bodies of the emulator and the code that sends them, faults included.

A handler returns a :class:`Reply`; :func:`send` turns it into an aiohttp
response. Without a body fault or a bandwidth limit, files go out through
``FileResponse`` (sendfile, Range handled by aiohttp). Otherwise the body is
streamed by hand, so that it can be paced, or cut, reset, corrupted or
trickled at a chosen byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import zipfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from ._faults import FaultInjector, FaultRule
from ._pace import Pace

__all__ = ["FileBody", "Reply", "StreamBody", "json_reply", "send", "text", "zip_chunks"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
_DEFAULT_CUT_UNKNOWN_LENGTH = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass(frozen=True, slots=True)
class FileBody:
    """A stored file; ``data`` holds its bytes when it was small enough to read at once."""

    path: Path
    size: int
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class StreamBody:
    """A body of unknown length, sent chunked: a zip built on the fly from ``source_bytes``."""

    chunks: Callable[[], AsyncGenerator[bytes, None]]
    source_bytes: int


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes | FileBody | StreamBody = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Reply:
    return Reply(status=status, body=message.encode(), content_type="text/plain")


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(data).encode())


async def send(
    request: web.Request,
    reply: Reply,
    fault: FaultRule | None,
    injector: FaultInjector,
    pace: Pace,
) -> web.StreamResponse:
    body_fault = fault if fault is not None and fault.kind not in ("status", "latency") else None
    if request.method == "HEAD":
        body_fault = None
    headers = {"Content-Type": reply.content_type, **reply.headers}
    body = reply.body
    if request.method == "HEAD" and isinstance(body, StreamBody):
        return web.Response(status=reply.status, headers=headers)  # length unknown until built
    if request.method != "HEAD" and not isinstance(body, bytes):
        archive_bytes = body.source_bytes if isinstance(body, StreamBody) else None
        await pace.body_starting(archive_bytes=archive_bytes)
    # sendfile cannot be paced: a bandwidth limit streams files by hand.
    paced = pace.profile.limits_bandwidth and request.method != "HEAD"
    if body_fault is None:
        if isinstance(body, FileBody) and body.data is None and not paced:
            return web.FileResponse(body.path, chunk_size=CHUNK_SIZE, headers=headers)
        if isinstance(body, bytes):
            await pace.sent(request, len(body))
            return web.Response(status=reply.status, body=body, headers=headers)
    status = reply.status
    if isinstance(body, FileBody):
        span = _byte_range(request.headers.get("Range"), body.size)
        if span is None:
            return web.Response(
                status=416, headers={"Content-Range": f"bytes */{body.size}"}, text="bad range"
            )
        start, length = span
        headers["Accept-Ranges"] = "bytes"
        if length != body.size:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{body.size}"
        if body.data is not None:
            piece = body.data[start : start + length]
            if body_fault is None:
                await pace.sent(request, len(piece))
                return web.Response(status=status, body=piece, headers=headers)
            chunks = _bytes_chunks(piece)
        else:
            chunks = _file_chunks(body.path, start, length)
        total: int | None = length
    elif isinstance(body, bytes):
        chunks = _bytes_chunks(body)
        total = len(body)
    else:
        chunks = body.chunks()
        total = None
    response = web.StreamResponse(status=status, headers=headers)
    if total is not None:
        response.content_length = total
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)

    async def write(data: bytes) -> None:
        await pace.sent(request, len(data))
        await response.write(data)

    try:
        if body_fault is None:
            async for chunk in chunks:
                await write(chunk)
            await response.write_eof()
        else:
            await _write_faulted(request, response, write, chunks, total, body_fault, injector)
    except ConnectionResetError:
        # The client went away mid-body: nothing to answer, and aiohttp knows already.
        logger.debug("client disconnected during %s %s", request.method, request.path)
    finally:
        await chunks.aclose()
    return response


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``Range`` header; the whole file if absent."""
    if header is None:
        return 0, size
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        length = min(int(last), size)
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end - start + 1


async def _bytes_chunks(data: bytes) -> AsyncGenerator[bytes, None]:
    for offset in range(0, len(data), CHUNK_SIZE):
        yield data[offset : offset + CHUNK_SIZE]


async def _file_chunks(path: Path, start: int, length: int) -> AsyncGenerator[bytes, None]:
    source: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(source.seek, start)
        remaining = length
        while remaining > 0:
            chunk = await asyncio.to_thread(source.read, min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(source.close)


async def _write_faulted(
    request: web.Request,
    response: web.StreamResponse,
    write: Callable[[bytes], Awaitable[None]],
    chunks: AsyncIterator[bytes],
    total: int | None,
    fault: FaultRule,
    injector: FaultInjector,
) -> None:
    if fault.kind == "trickle":
        injector.count_fault(fault)
        async for chunk in chunks:
            for offset in range(0, len(chunk), fault.chunk_size):
                await write(chunk[offset : offset + fault.chunk_size])
                await asyncio.sleep(fault.delay)
        await response.write_eof()
        return
    if fault.at is not None:
        cut = fault.at
    else:
        cut = total // 2 if total is not None else _DEFAULT_CUT_UNKNOWN_LENGTH
    position = 0
    async for chunk in chunks:
        end = position + len(chunk)
        if position <= cut < end:
            offset = cut - position
            if fault.kind == "corrupt":
                chunk = chunk[:offset] + bytes([chunk[offset] ^ 0xFF]) + chunk[offset + 1 :]
                injector.count_fault(fault)
            else:
                await write(chunk[:offset])
                injector.count_fault(fault)
                _drop_connection(request, reset=fault.kind == "reset")
                return
        await write(chunk)
        position = end
    await response.write_eof()


def _drop_connection(request: web.Request, *, reset: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: the close sends RST instead of FIN once buffered bytes are flushed.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.close()


class _Sink:
    """A write-only, non-seekable file for zipfile: collects what it writes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the parts are taken by :meth:`take`."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


async def zip_chunks(entries: list[tuple[str, Path, int]]) -> AsyncGenerator[bytes, None]:
    """A stored (uncompressed) zip of ``(archive name, path, size)`` entries, streamed."""
    sink = _Sink()
    # A non-seekable sink makes zipfile write data descriptors: nothing is buffered.
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[call-overload]
        for name, path, size in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            source: BinaryIO = await asyncio.to_thread(path.open, "rb")
            try:
                with archive.open(info, "w", force_zip64=size >= 2**31) as target:
                    while chunk := await asyncio.to_thread(source.read, CHUNK_SIZE):
                        target.write(chunk)
                        yield sink.take()
            finally:
                await asyncio.to_thread(source.close)
            yield sink.take()
    yield sink.take()
