"""Fetching many files of an entry as one zip archive, then unpacking and verifying each.

On a server with real per-request latency (tens to hundreds of ms on a loaded
XNAT), an entry of thousands of small files costs more in round trips than in
bytes: one archive request pays the latency once. The archive is streamed to the
staging folder (the bytes arriving there are the progress waiters watch), then
each wanted member is copied to ``files/<name>`` with its MD5 computed on the way
and checked against the listing (or its size, where the server gives no digest).
Members that do not check out are left to the per-file path, which retries them
and reports a mismatch clearly; members nobody asked for are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from .._aio import run_to_completion
from ._lock import Staging
from ._remote_files import RemoteFile

__all__ = ["ARCHIVE_MIN_FILES", "fetch_archive", "worth_an_archive"]

logger = logging.getLogger(__name__)

# From this many files to download, one archive beats a request per file...
ARCHIVE_MIN_FILES = 32
# ...if they are small (big ones stream best alone, resumable with Range)...
_ARCHIVE_MAX_MEAN_SIZE = 4 << 20
# ...and most of the entry: an archive holds all of it.
_ARCHIVE_MIN_SHARE = 0.5
_COPY_CHUNK = 1 << 20
_ARCHIVE_NAME = "archive.zip"


def worth_an_archive(todo: Sequence[RemoteFile], files: Sequence[RemoteFile]) -> bool:
    """Whether fetching ``todo`` (of the entry's ``files``) as one archive should pay."""
    if len(todo) < ARCHIVE_MIN_FILES or len(todo) < _ARCHIVE_MIN_SHARE * len(files):
        return False
    return sum(f.size for f in todo) <= _ARCHIVE_MAX_MEAN_SIZE * len(todo)


def _write_batch(path: Path, chunks: list[bytes]) -> None:
    with path.open("ab") as handle:
        for chunk in chunks:
            handle.write(chunk)


def _member_name(member: str) -> str:
    # XNAT names members <session>/scans/<scan>/resources/<label>/files/<name>; nothing
    # before the resource's files folder holds "/files/", its labels being single names.
    return member.split("/files/", 1)[1] if "/files/" in member else member


def _copy_member(
    opened: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path
) -> tuple[str, int]:
    """Copy one member to ``destination``; its MD5 and size."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with opened.open(info) as source, destination.open("wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _unpack(archive: Path, target: Path, wanted: dict[str, RemoteFile]) -> dict[str, str]:
    """Copy the wanted members of ``archive`` below ``target``; the MD5s of those that
    match their listing. A member that does not (or is corrupt) is removed again."""
    good: dict[str, str] = {}
    try:
        opened = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        logger.warning("the archive is not a usable zip (%s): fetching file by file", exc)
        return good
    with opened:
        for info in opened.infolist():
            file = wanted.get(_member_name(info.filename))
            if info.is_dir() or file is None or file.name in good:
                continue
            destination = target / file.name
            try:
                md5, size = _copy_member(opened, info, destination)
            except zipfile.BadZipFile:
                md5, size = "", -1
            if size == file.size and (not file.digest or md5 == file.digest):
                good[file.name] = md5
            else:
                logger.warning(
                    "archive member %s does not match the listing: fetching it alone", file.name
                )
                destination.unlink(missing_ok=True)
    return good


async def fetch_archive(
    staging: Staging, todo: Sequence[RemoteFile], chunks: AsyncIterator[bytes], what: str
) -> dict[str, str]:
    """Stream the archive ``chunks`` into ``staging`` and unpack the files of ``todo``;
    returns the MD5s of those unpacked and verified (the others are still to fetch)."""
    path = staging.path / _ARCHIVE_NAME
    await run_to_completion(path.unlink, True)
    batch: list[bytes] = []
    batch_bytes = 0
    try:
        async for chunk in chunks:
            batch.append(chunk)
            batch_bytes += len(chunk)
            if batch_bytes >= _COPY_CHUNK:
                await run_to_completion(_write_batch, path, batch)
                batch, batch_bytes = [], 0
        await run_to_completion(_write_batch, path, batch)
        good = await run_to_completion(
            _unpack, path, staging.files, {file.name: file for file in todo}
        )
    finally:
        await run_to_completion(path.unlink, True)
    logger.info("%d of %d files of %s from one archive", len(good), len(todo), what)
    return good
