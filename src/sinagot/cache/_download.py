"""Streaming one remote file into a staging folder: hash while writing, verify, resume.

A file is written to ``parts/<stem>.part`` while its MD5 is computed, then
compared with the server's digest and renamed to ``files/<name>``; a small
file that arrives whole is verified in memory and written there directly. Nothing
outside the staging folder changes here; the entry becomes visible only when
the cache commits a whole generation, after syncing every new file at once.

Files over 1 MiB are fsynced as they finish and marked complete in a
sidecar (with their MD5), so an adopted staging folder trusts them without
reading them again. Smaller ones are not synced one by one (that would
dominate the cost of many-file entries): an adopting holder re-hashes them
instead, which is cheap because they are small.

A file the server lists without a digest (XNAT with checksums off) is checked
by its size alone; its MD5 is computed while it streams all the same and
returned, so the cache records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._aio import run_to_completion, settle, start_in_thread
from .._fs import md5_file
from ..errors import ChecksumMismatchError
from ._lock import Staging
from ._ranged import RANGED_MIN, RangeMismatch, first_part, one_stream_is_slow, receive_ranged
from ._remote_files import FileSource, RemoteFile

__all__ = ["CHECKPOINT", "WholeFileWriter", "download_file", "keep_completed"]

logger = logging.getLogger(__name__)

_WRITE_CHUNK = 1 << 20
# Once a file is known to be big, it is written in larger pieces: fewer thread hops.
_STREAM_CHUNK = 4 << 20
# Files up to this size are synced with their generation and re-hashed on adoption.
_SMALL = _WRITE_CHUNK
# How often the resumable prefix is made durable and recorded in the sidecar. Each
# checkpoint costs an fdatasync (beside later writes, not stalling them) and a
# sidecar write; a killed download loses less than this per file.
CHECKPOINT = 64 << 20


def _stem(name: str) -> str:
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class _Paths:
    part: Path
    state: Path
    final: Path

    @staticmethod
    def of(staging: Staging, file: RemoteFile) -> _Paths:
        stem = _stem(file.name)
        return _Paths(
            part=staging.parts / f"{stem}.part",
            state=staging.parts / f"{stem}.state",
            final=staging.files / file.name,
        )


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_state(path: Path, file: RemoteFile, **fields: Any) -> None:
    # Not fsynced: a lost or torn sidecar only means starting the file over.
    tmp = path.with_suffix(".state-tmp")
    tmp.write_text(
        json.dumps({"name": file.name, "digest": file.digest, "size": file.size, **fields})
    )
    os.replace(tmp, path)


def _state_is_for(state: dict[str, Any] | None, file: RemoteFile) -> bool:
    return (
        state is not None
        and state.get("name") == file.name
        and state.get("digest") == file.digest
        and state.get("size") == file.size
    )


def _synced_at_finish(file: RemoteFile) -> bool:
    return file.size > _SMALL


def _finished(paths: _Paths, file: RemoteFile) -> str | None:
    """The MD5 of ``paths.final`` if it holds exactly ``file`` (see the module docstring)."""
    try:
        if paths.final.stat().st_size != file.size:
            return None
        if _synced_at_finish(file):
            state = _read_state(paths.state)
            md5 = None if state is None else state.get("md5")
            complete = _state_is_for(state, file) and state is not None and state.get("complete")
            return md5 if complete is True and isinstance(md5, str) else None
        if not file.digest:
            return None  # nothing to check a small file against: fetch it again
        return file.digest if md5_file(paths.final) == file.digest else None
    except OSError:
        return None


def keep_completed(staging: Staging, files: list[RemoteFile]) -> dict[str, str]:
    """In an adopted staging folder, keep only what can be trusted for ``files``; return the
    finished names with their MD5s.

    Partial files are left for :func:`_resume_point`.
    """
    # A holder killed between committing and cleaning up leaves a folder without files/.
    staging.parts.mkdir(exist_ok=True)
    staging.files.mkdir(exist_ok=True)
    stems = {_stem(f.name): f for f in files}
    done = {f.name: md5 for f in files if (md5 := _finished(_Paths.of(staging, f), f)) is not None}
    for dirpath, dirnames, filenames in os.walk(staging.files, topdown=False):
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.relative_to(staging.files).as_posix() not in done:
                path.unlink()
        for dirname in dirnames:
            with contextlib.suppress(OSError):  # not empty: still holds kept files
                Path(dirpath, dirname).rmdir()
    for entry in os.scandir(staging.parts):
        stem = entry.name.split(".", 1)[0]
        if stem not in stems or stems[stem].name in done:
            os.unlink(entry.path)
    return done


def _resume_point(paths: _Paths, file: RemoteFile) -> tuple[int, Any]:
    """Where a partial file can be continued, and the running MD5 of the bytes before that point.

    Python cannot save an MD5 state, so resuming must re-read the prefix from
    disk to rebuild the running digest anyway. The sidecar records the MD5 of
    the prefix at the last checkpoint (written only after that prefix was
    fdatasync-ed), so the same read also proves the prefix intact before a
    single byte is appended; without it a torn or altered prefix would only be
    caught at the very end, as a whole-file mismatch, after downloading the rest.
    """
    fresh = hashlib.md5(usedforsecurity=False)
    state = _read_state(paths.state)
    if state is None or not _state_is_for(state, file) or state.get("complete"):
        return 0, fresh
    offset = state.get("offset")
    expected = state.get("prefix_md5")
    if not isinstance(offset, int) or not isinstance(expected, str) or offset <= 0:
        return 0, fresh
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with paths.part.open("rb") as handle:
            remaining = offset
            while remaining:
                chunk = handle.read(min(remaining, _WRITE_CHUNK))
                if not chunk:
                    return 0, fresh
                digest.update(chunk)
                remaining -= len(chunk)
    except OSError:
        return 0, fresh
    if digest.hexdigest() != expected:
        logger.warning(
            "partial file %s does not match its recorded prefix hash; starting over", file.name
        )
        return 0, fresh
    return offset, digest


def _open_part(path: Path, offset: int) -> int:
    # Read and write: ranges written out of order are read back to be hashed in order.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _hash(digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


def _write_chunks(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        _write_all(fd, chunk)


def _checkpoint(fd: int, paths: _Paths, file: RemoteFile, offset: int, prefix_md5: str) -> None:
    # Writes after ``offset`` may run meanwhile: fdatasync covers what was written before.
    os.fdatasync(fd)
    _write_state(paths.state, file, offset=offset, prefix_md5=prefix_md5)


def _finish(fd: int, paths: _Paths, file: RemoteFile, md5: str) -> None:
    if _synced_at_finish(file):
        os.fsync(fd)
    paths.final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(paths.part, paths.final)
    if _synced_at_finish(file):
        _write_state(paths.state, file, complete=True, md5=md5)


def _store_whole(paths: _Paths, file: RemoteFile, data: bytes) -> str:
    """Hash a file received whole and, if it matches, write it in place; return its MD5.

    Written straight to its final name: it is verified already, and a torn copy
    left by a crash fails the size or hash check of :func:`keep_completed`.
    """
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if file.digest and digest != file.digest:
        return digest
    if "/" in file.name:
        paths.final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    return digest


_Whole = tuple[_Paths, RemoteFile, bytes]
# Thread hops of the whole-file writer at once: each hop mostly waits for the interpreter
# lock or the disk, so a few in parallel keep up with many small downloads.
_WRITER_HOPS = 4


def _store_batch(batch: list[_Whole]) -> list[str | OSError]:
    """:func:`_store_whole` for each file, with each file's own error."""
    results: list[str | OSError] = []
    for paths, file, data in batch:
        try:
            results.append(_store_whole(paths, file, data))
        except OSError as exc:
            results.append(exc)
    return results


class WholeFileWriter:
    """Stores files that arrived whole, in batches, a few thread hops at a time.

    Many small files would otherwise cost one hop each, and the hand-offs of
    the interpreter lock between the loop and the threads then cost more than
    hashing and writing them. A download hands its file over and frees its
    download slot at once; at most ``room`` files wait here (each at most
    1 MiB), so memory stays bounded when the disk is slower than the network.
    :meth:`run` is the writer's task, and :meth:`close` lets it end once all
    is written.
    """

    def __init__(self, room: int) -> None:
        self._room = asyncio.Semaphore(room)
        self._queue: list[tuple[_Whole, asyncio.Future[str]]] = []
        self._wakeup = asyncio.Event()
        self._closed = False

    async def wait_for_room(self) -> None:
        """Wait until :meth:`submit` may be called (once per wait)."""
        await self._room.acquire()

    def submit(self, paths: _Paths, file: RemoteFile, data: bytes) -> asyncio.Future[str]:
        """Queue a file (after :meth:`wait_for_room`); the future gives its MD5 once written."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append(((paths, file, data), future))
        self._wakeup.set()
        return future

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        hops = asyncio.Semaphore(_WRITER_HOPS)
        async with asyncio.TaskGroup() as group:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if not self._queue:
                    if self._closed:
                        return
                    continue
                # Files queue up while every hop is busy: the next batch is bigger.
                await hops.acquire()
                batch, self._queue = self._queue, []
                group.create_task(self._store(batch, hops))

    async def _store(
        self, batch: list[tuple[_Whole, asyncio.Future[str]]], hops: asyncio.Semaphore
    ) -> None:
        try:
            results = await run_to_completion(_store_batch, [item for item, _ in batch])
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        finally:
            hops.release()
            for _ in batch:
                self._room.release()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its download was cancelled meanwhile
            if isinstance(result, OSError):
                future.set_exception(result)
            else:
                future.set_result(result)


def _discard(paths: _Paths) -> None:
    paths.part.unlink(missing_ok=True)
    paths.state.unlink(missing_ok=True)


class _Mismatch(Exception):
    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


async def _receive(
    paths: _Paths,
    file: RemoteFile,
    source: FileSource,
    resume: bool,
    flush_interval: float,
    checkpoint: int,
) -> bytes | str:
    """Stream ``file``: its bytes if it arrived whole before a flush, else its MD5 once staged."""
    offset, digest = 0, hashlib.md5(usedforsecurity=False)
    # Only files longer than a checkpoint can have a resumable prefix.
    if resume and source.supports_range and file.size > checkpoint:
        offset, digest = await run_to_completion(_resume_point, paths, file)
    if offset:
        logger.info("resuming %s at byte %d of %d", file.name, offset, file.size)
    ranged = file.size >= RANGED_MIN and source.supports_range
    if ranged and offset:
        return await _receive_ranged(
            paths, file, source, offset, digest, flush_interval, checkpoint
        )
    # A big file's first part comes as a stream; its rate decides how the rest comes.
    judge_at = first_part(file.size) if ranged else None
    split = False
    # A fresh file's part is opened on its first flush: a small file that arrives at
    # once goes to the whole-file writer instead.
    fd = await run_to_completion(_open_part, paths.part, offset, discard=os.close) if offset else -1
    # The chunks as received (no copy into one buffer) are hashed in one thread and
    # written in another while the next ones come in; a checkpoint's sync runs beside
    # later writes. One hash at a time keeps the digest in order.
    hashing: asyncio.Future[None] | None = None
    writing: asyncio.Future[None] | None = None
    syncing: asyncio.Future[None] | None = None
    try:
        written = checkpointed = offset
        pending: list[bytes] = []
        pending_bytes = 0
        flushed_at = time.monotonic()
        asked_at = time.monotonic()
        chunks = source.stream(file, offset)
        try:
            async for chunk in chunks:
                pending.append(chunk)
                pending_bytes += len(chunk)
                if written + pending_bytes > file.size:
                    raise _Mismatch(f"more than the announced {file.size} bytes")
                if judge_at is not None and written + pending_bytes >= judge_at:
                    judge_at = None
                    # From the request on: a server slow to start is slow too.
                    elapsed = time.monotonic() - asked_at
                    if split := await one_stream_is_slow(written + pending_bytes, elapsed):
                        break
                # Bytes reaching the part file are the progress waiters watch: a slow
                # link must not keep them in memory long enough to look stalled.
                full = _WRITE_CHUNK if fd < 0 else _STREAM_CHUNK
                if pending_bytes < full and time.monotonic() - flushed_at < flush_interval:
                    continue
                if fd < 0:
                    fd = await run_to_completion(_open_part, paths.part, offset, discard=os.close)
                for job in (hashing, writing):
                    if job is not None:
                        await settle(job)
                batch, pending, pending_bytes = pending, [], 0
                hashing = start_in_thread(_hash, digest, batch)
                writing = start_in_thread(_write_chunks, fd, batch)
                flushed_at = time.monotonic()
                written += sum(len(piece) for piece in batch)
                if written - checkpointed >= checkpoint:
                    for job in (hashing, writing, syncing):
                        if job is not None:
                            await settle(job)
                    hashing = writing = None
                    prefix = digest.copy().hexdigest()
                    syncing = start_in_thread(_checkpoint, fd, paths, file, written, prefix)
                    checkpointed = written
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if fd < 0 and not split:
            if pending_bytes != file.size:
                raise _Mismatch(f"{pending_bytes} bytes instead of {file.size}")
            return b"".join(pending)
        if fd < 0:
            fd = await run_to_completion(_open_part, paths.part, offset, discard=os.close)
        for job in (hashing, writing, syncing):
            if job is not None:
                await settle(job)
        hashing = writing = syncing = None
        if pending:
            await run_to_completion(_hash, digest, pending)
            await run_to_completion(_write_chunks, fd, pending)
            written += pending_bytes
        if split:
            os.close(fd)
            fd = -1
            logger.debug("%s: one stream is slow; the rest comes in ranges", file.name)
            return await _receive_ranged(
                paths, file, source, written, digest, flush_interval, checkpoint
            )
        actual = digest.hexdigest()
        if written != file.size:
            raise _Mismatch(f"{written} bytes instead of {file.size} (MD5 {actual})")
        if file.digest and actual != file.digest:
            raise _Mismatch(actual)
        await run_to_completion(_finish, fd, paths, file, actual)
        return actual
    finally:
        for job in (hashing, writing, syncing):
            if job is not None:
                # Already failing: only make sure the threads are done with the descriptor.
                with contextlib.suppress(Exception):
                    await settle(job)
        if fd >= 0:
            os.close(fd)


async def _receive_ranged(
    paths: _Paths,
    file: RemoteFile,
    source: FileSource,
    offset: int,
    digest: Any,
    flush_interval: float,
    checkpoint: int,
) -> str:
    """Fetch a big ``file`` in parallel ranges (see ``_ranged``); its MD5 once staged."""
    fd = await run_to_completion(_open_part, paths.part, offset, discard=os.close)
    try:
        try:
            await receive_ranged(
                fd,
                file,
                source,
                offset,
                digest,
                flush_interval=flush_interval,
                checkpoint=checkpoint,
                record=lambda hashed, prefix: _checkpoint(fd, paths, file, hashed, prefix),
            )
        except RangeMismatch as exc:
            raise _Mismatch(str(exc)) from None
        actual: str = digest.hexdigest()
        if file.digest and actual != file.digest:
            raise _Mismatch(actual)
        await run_to_completion(_finish, fd, paths, file, actual)
        return actual
    finally:
        os.close(fd)


async def _attempt(
    staging: Staging,
    file: RemoteFile,
    source: FileSource,
    resume: bool,
    slots: asyncio.Semaphore,
    transfer: _Transfer,
) -> str:
    paths = _Paths.of(staging, file)
    async with slots:
        data = await _receive(
            paths, file, source, resume, transfer.flush_interval, transfer.checkpoint
        )
        if isinstance(data, str):
            return data
        await transfer.whole.wait_for_room()
        written = transfer.whole.submit(paths, file, data)
    actual = await written
    if file.digest and actual != file.digest:
        raise _Mismatch(actual)
    return actual


@dataclass(frozen=True, slots=True)
class _Transfer:
    flush_interval: float
    checkpoint: int
    whole: WholeFileWriter


async def download_file(
    staging: Staging,
    file: RemoteFile,
    source: FileSource,
    *,
    what: str,
    slots: asyncio.Semaphore,
    flush_interval: float,
    checkpoint: int,
    whole: WholeFileWriter,
) -> str:
    """Download, verify and stage ``file``, returning its MD5; on a mismatch (digest, or size
    for a file listed without digest) retry once from scratch, then raise.

    A slot of ``slots`` is held while bytes come in. Buffered bytes are written
    at least every ``flush_interval`` seconds, and the resumable prefix is made
    durable every ``checkpoint`` bytes; a file that arrives whole before its
    first flush is handed to ``whole``, freeing its slot.
    """
    transfer = _Transfer(flush_interval, checkpoint, whole)
    expected = file.digest or f"{file.size} bytes (the server lists no digest)"
    try:
        return await _attempt(staging, file, source, True, slots, transfer)
    except _Mismatch as exc:
        await run_to_completion(_discard, _Paths.of(staging, file))
        logger.warning(
            "file %s of %s does not match what the server announced (got %s, expected %s);"
            " downloading it again",
            file.name,
            what,
            exc.actual,
            expected,
        )
    try:
        return await _attempt(staging, file, source, False, slots, transfer)
    except _Mismatch as exc:
        await run_to_completion(_discard, _Paths.of(staging, file))
        raise ChecksumMismatchError(
            f"file {file.name!r} of {what} downloaded as {exc.actual} but the server "
            f"announced {expected}: check the server copy or the network, then retry"
        ) from None
