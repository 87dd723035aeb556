"""Housekeeping of a cache root: list entries, re-verify them, and evict the least recently used.

Every operation takes an entry's locks without waiting and skips what it cannot
lock, so it is safe while daemons and jobs use the cache.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .._fs import fsync_dir, md5_file
from ._lock import NEW_STAGING_PREFIX, claim_dead_stagings, try_lock, try_use_lock
from ._manifest import MANIFEST_NAME, read_manifest
from ._prune import prune_generations

__all__ = [
    "EntryInfo",
    "GcReport",
    "VerifyProblem",
    "VerifyReport",
    "collect_garbage",
    "list_entries",
    "verify_entries",
]

_TRASH = ".trash"
_QUARANTINE = "quarantine"
# A hidden staging folder is only unlocked between mkdir and flock; older than this it is debris.
_NEW_STAGING_GRACE = 3600.0


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One cached entry as ``ls`` shows it."""

    home: Path
    server: str
    project: str
    session: str
    entry: str
    files: int
    size: int  # bytes on disk below the home (all generations and temporary files)
    fetched: float | None  # epoch seconds of the last commit; None if never completed
    last_used: float  # epoch seconds: mtime of the manifest, touched on every hit

    @property
    def name(self) -> str:
        return f"{self.server}/{self.project}/{self.session}/{self.entry}"


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """A committed file whose bytes no longer match its digest (or that is missing)."""

    entry: str
    file: str
    expected: str
    actual: str | None  # None: the file is missing
    quarantined: Path | None  # where the corrupt file was moved


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked_entries: int
    checked_files: int
    problems: tuple[VerifyProblem, ...]
    busy: tuple[str, ...]  # entries skipped because a download holds them


@dataclass(frozen=True, slots=True)
class GcReport:
    evicted: tuple[EntryInfo, ...]
    busy: tuple[EntryInfo, ...]  # over the limit but locked or in use: kept
    removed_temporary: int  # dead holders' staging folders and unused old generations
    size_before: int
    size_after: int


def _homes(root: Path) -> Iterator[Path]:
    """Entry homes: the folders four levels below the root (server/project/session/entry)."""
    for server in _subdirs(root):
        if server.name.startswith("."):
            continue
        for project in _subdirs(server):
            for session in _subdirs(project):
                yield from _subdirs(session)


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _disk_size(home: Path) -> int:
    """Bytes below ``home``, counting hard-linked files once."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirnames, filenames in os.walk(home):
        for filename in filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(Path(dirpath, filename))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
    return total


def _entry_name(home: Path) -> str:
    session = home.parent
    project = session.parent
    return "/".join(
        [project.parent.name, unquote(project.name), unquote(session.name), unquote(home.name)]
    )


def _info(home: Path) -> EntryInfo:
    manifest = read_manifest(home / MANIFEST_NAME)
    try:
        last_used = os.stat(home / MANIFEST_NAME).st_mtime
    except OSError:
        last_used = os.stat(home).st_mtime if home.exists() else 0.0
    session = home.parent
    project = session.parent
    return EntryInfo(
        home=home,
        server=project.parent.name,
        project=unquote(project.name),
        session=unquote(session.name),
        entry=unquote(home.name),
        files=len(manifest.files) if manifest is not None else 0,
        size=_disk_size(home),
        fetched=manifest.fetched if manifest is not None else None,
        last_used=last_used,
    )


def list_entries(root: Path) -> list[EntryInfo]:
    """Every entry below ``root``, most recently used first."""
    return sorted((_info(h) for h in _homes(root)), key=lambda e: e.last_used, reverse=True)


def _quarantine(home: Path, path: Path, name: str) -> Path:
    folder = home / _QUARANTINE
    folder.mkdir(exist_ok=True)
    target = (
        folder
        / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-{name.replace('/', '%2F')}"
    )
    os.rename(path, target)
    fsync_dir(path.parent)
    fsync_dir(folder)
    return target


def verify_entries(root: Path) -> VerifyReport:
    """Re-hash every committed file; move corrupt ones to the entry's ``quarantine/`` folder.

    A quarantined file is missing from its generation, so the next ``fetch``
    downloads that file again (and only it).
    """
    problems: list[VerifyProblem] = []
    busy: list[str] = []
    entries = files = 0
    for home in _homes(root):
        info_name = _entry_name(home)
        manifest = read_manifest(home / MANIFEST_NAME)
        if manifest is None:
            continue
        lock = try_lock(home, uuid.uuid4().hex)
        if lock is None:
            busy.append(info_name)
            continue
        try:
            entries += 1
            generation = home / manifest.generation
            for f in manifest.files:
                files += 1
                path = generation / f.name
                try:
                    actual: str | None = md5_file(path)
                except FileNotFoundError:
                    actual = None
                if actual == f.md5:
                    continue
                moved = _quarantine(home, path, f.name) if actual is not None else None
                problems.append(VerifyProblem(info_name, f.name, f.md5, actual, moved))
        finally:
            lock.release()
    return VerifyReport(entries, files, tuple(problems), tuple(busy))


def _remove_temporary(home: Path) -> int:
    """Remove dead holders' staging folders and unused old generations; caller holds the entry lock."""
    removed = 0
    for staging in claim_dead_stagings(home):
        shutil.rmtree(staging.path, ignore_errors=True)
        staging.close()
        removed += 1
    now = time.time()
    for path in home.glob(f"{NEW_STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > _NEW_STAGING_GRACE:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed + prune_generations(home)


def _evict(root: Path, home: Path) -> bool:
    """Remove an entry if nobody downloads or uses it; the rename makes it vanish at once."""
    lock = try_lock(home, uuid.uuid4().hex)
    if lock is None:
        return False
    try:
        use = try_use_lock(home, exclusive=True)
        if use is None:
            return False
        try:
            trash = root / _TRASH / uuid.uuid4().hex
            trash.parent.mkdir(exist_ok=True)
            os.rename(home, trash)
        finally:
            use.release()
    finally:
        lock.release()
    shutil.rmtree(trash, ignore_errors=True)
    return True


def collect_garbage(root: Path, max_size: int) -> GcReport:
    """Clean temporary files, then evict least-recently-used entries until the cache fits ``max_size`` bytes."""
    removed = 0
    shutil.rmtree(root / _TRASH, ignore_errors=True)  # left by an interrupted gc
    for home in _homes(root):
        lock = try_lock(home, uuid.uuid4().hex)
        if lock is None:
            continue
        try:
            removed += _remove_temporary(home)
        finally:
            lock.release()
    entries = sorted((_info(h) for h in _homes(root)), key=lambda e: e.last_used)
    before = total = sum(e.size for e in entries)
    evicted: list[EntryInfo] = []
    busy: list[EntryInfo] = []
    for entry in entries:
        if total <= max_size:
            break
        if _evict(root, entry.home):
            evicted.append(entry)
            total -= entry.size
        else:
            busy.append(entry)
    return GcReport(tuple(evicted), tuple(busy), removed, before, total)
