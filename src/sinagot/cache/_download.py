"""Streaming one remote file into a staging folder: hash while writing, verify, resume.

A file is written to ``parts/<stem>.part`` while its MD5 is computed, then
compared with the server's digest, fsynced and renamed to ``files/<name>``.
Nothing outside the staging folder changes here; the entry becomes visible
only when the cache commits a whole generation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ChecksumMismatchError
from ._lock import Staging
from ._threads import run_to_completion
from ._types import FileSource, RemoteFile

__all__ = ["download_file", "keep_completed"]

logger = logging.getLogger(__name__)

_WRITE_CHUNK = 1 << 20
# How often the resumable prefix is made durable and recorded in the sidecar.
_CHECKPOINT = 16 << 20


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


def keep_completed(staging: Staging, files: list[RemoteFile]) -> set[str]:
    """In an adopted staging folder, keep only what can be trusted for ``files``; return the finished names.

    A finished file is trusted when its sidecar says it was verified against
    the same digest and size; partial files are left for :func:`_resume_point`.
    """
    # A holder killed between committing and cleaning up leaves a folder without files/.
    staging.parts.mkdir(exist_ok=True)
    staging.files.mkdir(exist_ok=True)
    stems = {_stem(f.name): f for f in files}
    done: set[str] = set()
    for f in files:
        paths = _Paths.of(staging, f)
        state = _read_state(paths.state)
        with contextlib.suppress(OSError):
            if (
                _state_is_for(state, f)
                and state is not None
                and state.get("complete") is True
                and paths.final.stat().st_size == f.size
            ):
                done.add(f.name)
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(fd: int, digest: Any, data: bytes) -> None:
    digest.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _checkpoint(fd: int, paths: _Paths, file: RemoteFile, offset: int, digest: Any) -> None:
    os.fdatasync(fd)
    _write_state(paths.state, file, offset=offset, prefix_md5=digest.copy().hexdigest())


def _finish(fd: int, paths: _Paths, file: RemoteFile) -> None:
    os.fsync(fd)
    paths.final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(paths.part, paths.final)
    _write_state(paths.state, file, complete=True)


def _discard(paths: _Paths) -> None:
    paths.part.unlink(missing_ok=True)
    paths.state.unlink(missing_ok=True)


class _Mismatch(Exception):
    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


async def _attempt(
    staging: Staging, file: RemoteFile, source: FileSource, resume: bool, flush_interval: float
) -> None:
    paths = _Paths.of(staging, file)
    offset, digest = (
        await run_to_completion(_resume_point, paths, file)
        if resume and source.supports_range
        else (0, hashlib.md5(usedforsecurity=False))
    )
    if offset:
        logger.info("resuming %s at byte %d of %d", file.name, offset, file.size)
    fd = await run_to_completion(_open_part, paths.part, offset)
    try:
        written = checkpointed = offset
        buffer = bytearray()
        flushed_at = time.monotonic()
        chunks = source.stream(file, offset)
        try:
            async for chunk in chunks:
                buffer += chunk
                if written + len(buffer) > file.size:
                    raise _Mismatch(f"more than the announced {file.size} bytes")
                # Bytes reaching the part file are the progress waiters watch: a slow
                # link must not keep them in memory long enough to look stalled.
                if len(buffer) >= _WRITE_CHUNK or time.monotonic() - flushed_at >= flush_interval:
                    await run_to_completion(_write, fd, digest, bytes(buffer))
                    flushed_at = time.monotonic()
                    written += len(buffer)
                    buffer.clear()
                    if written - checkpointed >= _CHECKPOINT:
                        await run_to_completion(_checkpoint, fd, paths, file, written, digest)
                        checkpointed = written
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if buffer:
            await run_to_completion(_write, fd, digest, bytes(buffer))
            written += len(buffer)
        actual = digest.hexdigest()
        if written != file.size:
            raise _Mismatch(f"{written} bytes instead of {file.size} (MD5 {actual})")
        if actual != file.digest:
            raise _Mismatch(actual)
        await run_to_completion(_finish, fd, paths, file)
    finally:
        os.close(fd)


async def download_file(
    staging: Staging, file: RemoteFile, source: FileSource, *, what: str, flush_interval: float
) -> None:
    """Download, verify and stage ``file``; on a digest mismatch retry once from scratch, then raise.

    Buffered bytes are written at least every ``flush_interval`` seconds.
    """
    for attempt in (1, 2):
        try:
            await _attempt(staging, file, source, attempt == 1, flush_interval)
            return
        except _Mismatch as exc:
            await run_to_completion(_discard, _Paths.of(staging, file))
            if attempt == 2:
                raise ChecksumMismatchError(
                    f"file {file.name!r} of {what} downloaded as {exc.actual} but the server "
                    f"digest is {file.digest}: check the server copy or the network, then retry"
                ) from None
            logger.warning(
                "file %s of %s does not match its digest (got %s, expected %s); downloading it again",
                file.name,
                what,
                exc.actual,
                file.digest,
            )
