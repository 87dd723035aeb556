"""Uploads: a raw body (xnatpy, pyxnat ``inbody=true``) or multipart parts, archives unpacked.

Every file is streamed to a temporary file and hashed on the way; nothing is
committed until the whole body has arrived and every archive in it is unpacked,
and then all of it is committed at once or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import IO, Any

from aiohttp import BodyPartReader, ClientPayloadError, StreamReader

from ._body import Reply, text
from ._context import Call, HttpError, resolve
from ._extract import ArchiveError, archive_kind, extract_archive
from ._records import Owner, StagedFile, safe_relative_path

__all__ = ["upload"]

logger = logging.getLogger(__name__)

_UPLOAD_BUFFER = 1024 * 1024


async def upload(call: Call) -> Reply:
    """PUT/POST a file: a raw body (xnatpy, pyxnat ``inbody=true``) or multipart parts."""

    # Resolve (and check access) before reading the body; the resource itself is only
    # created once every file is there to commit.
    resolved = await asyncio.to_thread(resolve, call, upto=call.target.owner_level)
    assert call.target.resource is not None
    request = call.request
    received: list[StagedFile] = []
    try:
        try:
            await _receive_all(call, received)
        except (ConnectionResetError, ClientPayloadError) as exc:
            # The client went away mid-body: nothing was committed.
            logger.debug("upload to %s interrupted: %s", request.path, exc)
            raise HttpError(400, "the upload was interrupted: send the file again") from exc
        await asyncio.to_thread(_commit_all, call, resolved.owner, call.target.resource, received)
    finally:
        # Committed files were renamed away; whatever is left is a leftover temp file.
        for staged in received:
            await asyncio.to_thread(staged.temp.unlink, True)
    return text(200, "")


async def _receive_all(call: Call, received: list[StagedFile]) -> None:
    """Stream every file of the request body to temporary files, appending to ``received``."""
    request = call.request
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.filename:
                continue
            received.append(await _receive(call, call.target.path or part.filename, part))
    else:
        if not call.target.path:
            raise HttpError(400, "give the file name in the URL: .../files/{name}")
        received.append(await _receive(call, call.target.path, request.content))
    if not received:
        raise HttpError(400, "the upload contained no file")


def _commit_all(call: Call, owner: Owner, label: str, received: list[StagedFile]) -> None:
    """Unpack the archives if asked, then commit every file in one batch (blocking)."""
    for staged in received:
        try:
            safe_relative_path(staged.path)
        except ValueError as exc:
            raise HttpError(400, f"{exc}: use a relative path without '..'") from exc
    files: list[StagedFile] = []
    try:
        for staged in received:
            kind = archive_kind(staged.path) if call.flag("extract") else None
            if kind is None:
                files.append(staged)
                continue
            try:
                files += extract_archive(
                    call.store.disk, staged.temp, staged.path, kind, call.state.extract_limits
                )
            except ArchiveError as exc:
                raise HttpError(400, str(exc)) from exc
        call.store.commit_files(
            owner,
            label,
            files,
            overwrite=call.flag("overwrite"),
            fmt=call.param("format"),
            content=call.param("content"),
            tags=call.param("tags"),
        )
    finally:
        # Members that were not committed (a refused batch) must not outlive the request.
        for staged in files:
            staged.temp.unlink(missing_ok=True)


async def _receive(call: Call, path: str, source: StreamReader | BodyPartReader) -> StagedFile:
    """Stream a body into a fresh temporary file, hashing it on the way."""
    temp = call.store.disk.new_upload()
    hasher = hashlib.md5()
    size = 0
    out: IO[bytes] = await asyncio.to_thread(temp.open, "wb")
    try:
        buffer = bytearray()
        while True:
            if isinstance(source, StreamReader):
                chunk = await source.read(_UPLOAD_BUFFER)
            else:
                chunk = await source.read_chunk(_UPLOAD_BUFFER)
            if chunk:
                buffer += chunk
                await call.state.pace.received(call.request, len(chunk))
            if buffer and (not chunk or len(buffer) >= _UPLOAD_BUFFER):
                data = bytes(buffer)
                buffer.clear()
                size += len(data)
                await asyncio.to_thread(_write_hashing, out, hasher, data)
            if not chunk:
                break
        await asyncio.to_thread(out.close)
    except BaseException:
        await asyncio.to_thread(out.close)
        await asyncio.to_thread(temp.unlink, True)
        raise
    return StagedFile(path, temp, size, hasher.hexdigest())


def _write_hashing(out: IO[bytes], hasher: Any, data: bytes) -> None:
    hasher.update(data)
    out.write(data)
