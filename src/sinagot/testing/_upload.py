"""Uploads: a raw body (xnatpy, pyxnat ``inbody=true``) or multipart parts, zips unpacked.

Every file is streamed to a temporary file and hashed on the way; nothing is
committed until the whole body has arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zipfile
from pathlib import Path
from typing import IO, Any

from aiohttp import BodyPartReader, ClientPayloadError, StreamReader

from ._body import Reply, text
from ._context import Call, HttpError, resolve
from ._records import Owner, Resource, safe_relative_path
from ._store import Store

__all__ = ["upload"]

logger = logging.getLogger(__name__)

_UPLOAD_BUFFER = 1024 * 1024


async def upload(call: Call) -> Reply:
    """PUT/POST a file: a raw body (xnatpy, pyxnat ``inbody=true``) or multipart parts."""

    # Resolve (and check access) before reading the body; the resource itself is only
    # created once a complete file is there to commit.
    resolved = await asyncio.to_thread(resolve, call, upto=call.target.owner_level)
    assert call.target.resource is not None
    overwrite = call.flag("overwrite")
    extract = call.flag("extract")
    options = {
        "fmt": call.param("format"),
        "content": call.param("content"),
        "tags": call.param("tags"),
    }
    request = call.request
    received: list[tuple[str, Path, int, str]] = []
    try:
        try:
            await _receive_all(call, received)
        except (ConnectionResetError, ClientPayloadError) as exc:
            # The client went away mid-body: nothing was committed.
            logger.debug("upload to %s interrupted: %s", request.path, exc)
            raise HttpError(400, "the upload was interrupted: send the file again") from exc
        await asyncio.to_thread(
            _commit_all,
            call.store,
            resolved.owner,
            call.target.resource,
            received,
            overwrite,
            extract,
            options,
        )
    finally:
        # Committed files were renamed away; whatever is left is a leftover temp file.
        for _name, temp, _size, _digest in received:
            await asyncio.to_thread(temp.unlink, True)
    return text(200, "")


async def _receive_all(call: Call, received: list[tuple[str, Path, int, str]]) -> None:
    """Stream every file of the request body to temporary files, appending to ``received``."""
    request = call.request
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.filename:
                continue
            name = call.target.path or part.filename
            temp, size, digest = await _receive(call.store, part)
            received.append((name, temp, size, digest))
    else:
        if not call.target.path:
            raise HttpError(400, "give the file name in the URL: .../files/{name}")
        temp, size, digest = await _receive(call.store, request.content)
        received.append((call.target.path, temp, size, digest))
    if not received:
        raise HttpError(400, "the upload contained no file")


def _commit_all(
    store: Store,
    owner: Owner,
    label: str,
    received: list[tuple[str, Path, int, str]],
    overwrite: bool,
    extract: bool,
    options: dict[str, str],
) -> None:
    for name, _temp, _size, _digest in received:
        try:
            safe_relative_path(name)
        except ValueError as exc:
            raise HttpError(400, f"{exc}: use a relative path without '..'") from exc
    resource, _ = store.create_resource(owner, label)
    for name, temp, size, digest in received:
        if extract and name.lower().endswith(".zip"):
            _extract_zip(store, resource, temp, overwrite)
            continue
        store.commit_file(
            resource,
            name,
            temp,
            size,
            digest,
            overwrite=overwrite,
            fmt=options["fmt"],
            content=options["content"],
            tags=options["tags"],
        )


def _extract_zip(store: Store, resource: Resource, archive_path: Path, overwrite: bool) -> None:
    with zipfile.ZipFile(archive_path) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            try:
                name = safe_relative_path(member.filename)
            except ValueError as exc:
                raise HttpError(400, f"zip member {exc}: fix the archive") from exc
            with archive.open(member) as source:
                temp, size, digest = store.disk.write_upload(source)
            store.commit_file(resource, name, temp, size, digest, overwrite=overwrite)


async def _receive(store: Store, source: StreamReader | BodyPartReader) -> tuple[Path, int, str]:
    """Stream a body into a fresh temporary file, hashing it on the way."""
    temp = store.disk.new_upload()
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
    return temp, size, hasher.hexdigest()


def _write_hashing(out: IO[bytes], hasher: Any, data: bytes) -> None:
    hasher.update(data)
    out.write(data)
