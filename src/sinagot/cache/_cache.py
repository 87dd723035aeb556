"""The cache: one verified copy of each remote entry, shared by every process on the machine.

Layout below the root (see ``EntryKey.relative_dir``)::

    <scheme>-<host>-<port>[+<path>]/<project>/<session>/<entry>/   the entry's home
        manifest.json      commit point: names the current generation
        g-<token>/         a generation: exactly the entry's verified files
        tmp-<token>/       a download (or adoption) in progress (parts/ + files/), flocked by
                           its writer
        lock               download lock (flock) + holder pid/host/start time
        takeover.lock      serialises takeovers of a stalled holder
        commit.lock        serialises commits of the entry
        use.lock           shared flocks of jobs using the entry (``Cache.using``)
        quarantine/        corrupt files moved aside by ``verify``

Each download builds a whole new generation (unchanged files are hard links
to the previous one, so only changed files are downloaded) and publishes it by
atomically replacing the manifest. Readers therefore see the old entry or the
new one, never a mix, and never a partial or unverified file, whatever is
killed when. A holder waiting for a server's first byte heartbeats through its
lock file, so it is not taken for stalled. A stalled holder that wakes up after
a takeover and finishes still commits its verified files (commits are
serialised by ``commit.lock``); a holder that sees another one's commit of the
same files stops downloading and uses it.
Old generations are pruned right after a commit when no job uses the entry,
otherwise by ``gc``: a path returned by ``fetch``/``lookup`` stays valid while
the caller holds ``using(key)``.
Files the caller holds and the server lists with their digests (what Sinagot
uploaded) are adopted the same way (``adopt``): copied into a staging folder,
checked against those digests, committed; a killed adopter leaves no entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .._aio import first_error, run_to_completion
from .._counters import COUNTERS
from .._fs import fsync_dir
from ..config import CacheSettings
from ..errors import CacheFullError, CacheLockTimeoutError
from ._adopt import copy_verified
from ._archive import fetch_archive, worth_an_archive
from ._download import CHECKPOINT, WholeFileWriter, download_file, keep_completed
from ._heartbeat import NetworkWaits, heartbeat
from ._location import resolve_cache_dir
from ._lock import (
    EntryLock,
    Staging,
    UseLock,
    acquire,
    claim_dead_stagings,
    commit_lock,
    create_staging,
    try_use_lock,
)
from ._maintenance import (
    EntryInfo,
    GcReport,
    VerifyReport,
    collect_garbage,
    list_entries,
    verify_entries,
)
from ._manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from ._prune import GENERATION_PREFIX, prune_generations
from ._remote_files import (
    ArchiveSource,
    EntryKey,
    FileSource,
    ManifestFile,
    RemoteFile,
    check_file_set,
)
from ._sync import sync_tree

__all__ = ["Cache", "EntryUse"]

logger = logging.getLogger(__name__)

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_USE_POLL = 0.05
# Bytes are flushed 1 MiB at a time; a checkpoint below two flushes would sync every flush.
_MIN_CHECKPOINT = 2 << 20
# The last use of an entry (for LRU eviction) is recorded at most this often: a hit stays read-only.
_TOUCH_INTERVAL = 60.0


class EntryUse:
    """Marks an entry as in use (a shared flock) so that ``gc`` never evicts it; see :meth:`Cache.using`.

    Usable as ``with`` (blocking, for threads and Dask workers) or
    ``async with`` (polling, never blocks the event loop). The wait is only as
    long as a ``gc`` that is removing this very entry. The last user out
    prunes generations superseded meanwhile (a commit cannot while it is used).
    """

    def __init__(self, home: Path, timeout: float) -> None:
        self._home = home
        self._timeout = timeout
        self._lock: UseLock | None = None

    def _timeout_error(self) -> CacheLockTimeoutError:
        return CacheLockTimeoutError(
            f"cache entry {self._home} stayed claimed by gc for {self._timeout:.0f} s: "
            "check for a stuck 'sinagot cache gc'"
        )

    def __enter__(self) -> EntryUse:
        deadline = time.monotonic() + self._timeout
        while (lock := try_use_lock(self._home, exclusive=False)) is None:
            if time.monotonic() >= deadline:
                raise self._timeout_error()
            time.sleep(_USE_POLL)
        self._lock = lock
        return self

    async def __aenter__(self) -> EntryUse:
        deadline = time.monotonic() + self._timeout
        while (lock := await asyncio.to_thread(try_use_lock, self._home, exclusive=False)) is None:
            if time.monotonic() >= deadline:
                raise self._timeout_error()
            await asyncio.sleep(_USE_POLL)
        self._lock = lock
        return self

    def _release(self) -> bool:
        if self._lock is None:
            return False
        self._lock.release()
        self._lock = None
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._release():
            prune_generations(self._home)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._release():
            await run_to_completion(prune_generations, self._home)


class Cache:
    """A checksum-verified cache of remote entries below ``root``, safe across processes.

    ``race_condition_delay``: seconds without progress after which a holder is
    taken over. ``lock_timeout``: how long ``fetch`` waits for another holder
    in all. ``concurrent_files``: files of one entry downloaded at once.
    ``checkpoint``: bytes between two durable resume points of a big file.
    """

    def __init__(
        self,
        root: Path,
        *,
        race_condition_delay: float = 5.0,
        lock_timeout: float = 3600.0,
        concurrent_files: int = 8,
        checkpoint: int = CHECKPOINT,
    ) -> None:
        if race_condition_delay <= 0 or lock_timeout <= 0 or concurrent_files < 1:
            raise ValueError(
                "race_condition_delay, lock_timeout and concurrent_files must be positive"
            )
        if checkpoint < _MIN_CHECKPOINT:
            raise ValueError(f"checkpoint must be at least {_MIN_CHECKPOINT} bytes")
        self.root = root
        self._root = os.fspath(root)
        self.race_condition_delay = race_condition_delay
        self.lock_timeout = lock_timeout
        self.concurrent_files = concurrent_files
        self.checkpoint = checkpoint
        # Well inside the delay after which waiters (with the same setting) call a holder stalled.
        self._flush_interval = min(1.0, race_condition_delay / 4)

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> Cache:
        """The cache ``settings`` describe, as the stores and ``sinagot cache`` open it.

        The daemon's metrics, which only list a cache's entries, open it by its root.
        """
        return cls(
            resolve_cache_dir(settings.dir),
            race_condition_delay=settings.race_condition_delay,
            lock_timeout=settings.lock_timeout,
            concurrent_files=settings.concurrent_files,
        )

    @property
    def settings(self) -> CacheSettings:
        return CacheSettings(
            dir=self.root,
            race_condition_delay=self.race_condition_delay,
            lock_timeout=self.lock_timeout,
            concurrent_files=self.concurrent_files,
        )

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def entry_dir(self, key: EntryKey) -> Path:
        """The home directory of an entry (manifest, locks, generations); files are in ``fetch``'s result."""
        return self.root.joinpath(*key.relative_dir())

    def manifest(self, key: EntryKey) -> Manifest | None:
        """The committed manifest of an entry (None if never fetched), e.g. to compare ``last_modified``."""
        return read_manifest(self.entry_dir(key) / MANIFEST_NAME)

    def lookup(
        self, key: EntryKey, files: Sequence[RemoteFile], *, last_modified: str | None = None
    ) -> Path | None:
        """The directory holding exactly ``files``, verified, if the cache has them; else None.

        Costs one manifest read and one ``stat`` per file: no hashing.
        ``last_modified``, when given, must also equal the manifest's.
        """
        # Plain strings, not pathlib: this is the hot path of every cache hit.
        home = os.path.join(self._root, *key.relative_dir())
        manifest_path = os.path.join(home, MANIFEST_NAME)
        manifest = read_manifest(manifest_path)
        if manifest is None or not manifest.matches(files, last_modified):
            return None
        generation = os.path.join(home, manifest.generation)
        if not manifest.stat_matches(generation):
            return None
        if time.time() - manifest.last_used > _TOUCH_INTERVAL:
            with contextlib.suppress(OSError):
                os.utime(manifest_path)
        return Path(generation)

    def restamp(self, key: EntryKey, old: str, new: str) -> bool:
        """Record that the entry, fetched when the server's change marker was ``old``, is
        still current at ``new`` (files without a digest are matched by that marker), e.g.
        after the caller's own uploads moved it. Blocking; True if the entry was at ``old``."""
        home = self.entry_dir(key)
        if not home.is_dir():
            return False
        with commit_lock(home):
            manifest = read_manifest(home / MANIFEST_NAME)
            if manifest is None or manifest.last_modified != old:
                return False
            restamped = dataclasses.replace(manifest, last_modified=new)
            write_manifest(home / MANIFEST_NAME, restamped, _manifest_key(key))
        return True

    def using(self, key: EntryKey) -> EntryUse:
        """Context manager marking ``key`` in use: ``gc`` and pruning leave it (and its files) alone."""
        return EntryUse(self.entry_dir(key), self.lock_timeout)

    def entries(self) -> list[EntryInfo]:
        """Every cached entry, most recently used first (``sinagot cache ls``)."""
        return list_entries(self.root)

    def verify(self) -> VerifyReport:
        """Re-hash every committed file and quarantine corrupt ones (``sinagot cache verify``)."""
        return verify_entries(self.root)

    def gc(self, max_size: int) -> GcReport:
        """Drop dead holders' files, then evict least-recently-used entries above ``max_size`` bytes.

        Entries being downloaded or held by ``using`` are never evicted.
        """
        return collect_garbage(self.root, max_size)

    def _describe(self, key: EntryKey) -> str:
        return f"{key.server} {key.project}/{key.session}/{key.entry}"

    async def fetch(
        self,
        key: EntryKey,
        files: Sequence[RemoteFile],
        source: FileSource,
        *,
        last_modified: str | None = None,
    ) -> Path:
        """The directory holding exactly ``files``, verified; downloads what is missing or changed.

        Concurrent callers (processes, threads, tasks) of one entry download it
        once: one holds the entry's lock, the others wait and use its result.
        """
        check_file_set(files)
        # A hit is one small manifest read and a stat per file (tens of microseconds): cheaper
        # inline than a hop to a thread, and thousands of hits must stay well under a second.
        hit = self.lookup(key, files, last_modified=last_modified)
        COUNTERS.cache_lookup(hit=hit is not None)
        if hit is not None:
            return hit
        home = self.entry_dir(key)
        what = self._describe(key)

        def committed() -> Path | None:
            return self.lookup(key, files, last_modified=last_modified)

        lock = await self._lock_entry(home, what, committed)
        if isinstance(lock, Path):
            return lock
        try:
            hit = await asyncio.to_thread(committed)
            if hit is not None:
                return hit
            return await self._fill(lock, key, list(files), source, last_modified, what, committed)
        finally:
            lock.release()

    async def _lock_entry(
        self, home: Path, what: str, committed: Callable[[], Path | None]
    ) -> EntryLock | Path:
        """The entry's lock, or its committed folder if another process committed it while
        this one waited."""
        return await acquire(
            home,
            uuid.uuid4().hex,
            race_condition_delay=self.race_condition_delay,
            patience=self.lock_timeout,
            what=what,
            ready=committed,
            watch=home / MANIFEST_NAME,
        )

    async def adopt(
        self, key: EntryKey, files: Sequence[RemoteFile], sources: Mapping[str, Path]
    ) -> Path:
        """Enter ``files``, each at its path in ``sources`` (by name), as the verified files
        of entry ``key``.

        For files the caller holds and the server lists with these digests (its own
        uploads): each is copied and checked against its digest (a mismatch raises
        ChecksumMismatchError), then committed as a download would be. Nothing is
        downloaded, and the cache counts no lookup: this is no cache miss. An entry
        that already holds exactly ``files`` is left as it is. Every file needs a digest.
        """
        check_file_set(files)
        if any(not f.digest for f in files):
            raise ValueError("only files listed with a digest can be adopted into the cache")

        def committed() -> Path | None:
            return self.lookup(key, files)

        held = await asyncio.to_thread(committed)
        if held is not None:
            return held
        home = self.entry_dir(key)
        what = self._describe(key)
        lock = await self._lock_entry(home, what, committed)
        if isinstance(lock, Path):
            return lock
        staging: Staging | None = None
        try:
            held = await asyncio.to_thread(committed)
            if held is not None:
                return held
            staging = await run_to_completion(
                self._new_staging, lock, discard=lambda made: made.close()
            )
            md5s = await run_to_completion(copy_verified, sources, staging.files, files)
            names = [f.name for f in files]
            return await run_to_completion(
                self._commit, lock, staging, key, list(files), md5s, names, None
            )
        except BaseException:
            if staging is not None:
                await run_to_completion(shutil.rmtree, staging.path, True)
            raise
        finally:
            if staging is not None:
                staging.close()
            lock.release()

    def _new_staging(self, lock: EntryLock) -> Staging:
        """A new staging folder, dead holders' ones dropped: a copy is not worth resuming."""
        for dead in claim_dead_stagings(lock.home):
            shutil.rmtree(dead.path, ignore_errors=True)
            dead.close()
        staging = create_staging(lock.home, lock.token)
        try:
            lock.announce(staging.path.name)
        except BaseException:
            # A full disk fails the holder record's write: the fresh folder holds nothing.
            shutil.rmtree(staging.path, ignore_errors=True)
            staging.close()
            raise
        return staging

    def _prepare_staging(
        self, lock: EntryLock, files: list[RemoteFile]
    ) -> tuple[Staging, dict[str, str]]:
        """Adopt a dead holder's staging folder (to resume it) or create one; drop other dead
        ones. Returns it with the files it holds finished, and their MD5s."""
        dead = claim_dead_stagings(lock.home)
        adopted = max(dead, key=_staged_bytes, default=None)
        for other in dead:
            if other is not adopted:
                shutil.rmtree(other.path, ignore_errors=True)
                other.close()
        staging = adopted if adopted is not None else create_staging(lock.home, lock.token)
        try:
            done: dict[str, str] = {}
            if adopted is not None:
                logger.info("resuming the download left in %s", adopted.path)
                done = keep_completed(staging, files)
            lock.announce(staging.path.name)
        except BaseException:
            # A full disk fails the holder record's write: a fresh folder holds nothing worth
            # keeping, and an adopted one is left, unlocked, for the next holder to resume.
            if adopted is None:
                shutil.rmtree(staging.path, ignore_errors=True)
            staging.close()
            raise
        return staging, done

    def _link_unchanged(
        self,
        home: Path,
        staging: Staging,
        files: list[RemoteFile],
        md5s: dict[str, str],
        last_modified: str | None,
    ) -> list[RemoteFile]:
        """Hard-link files unchanged since the current generation (adding their MD5s to
        ``md5s``); return those still to download."""
        manifest = read_manifest(home / MANIFEST_NAME)
        previous = manifest.by_name() if manifest is not None else {}
        todo: list[RemoteFile] = []
        for f in files:
            if f.name in md5s:
                continue
            old = previous.get(f.name)
            if (
                manifest is not None
                and old is not None
                and old.size == f.size
                # Without a digest, only the server's change marker says it is the same file.
                and (
                    old.md5 == f.digest
                    if f.digest
                    else last_modified is not None and manifest.last_modified == last_modified
                )
            ):
                source = home / manifest.generation / f.name
                with contextlib.suppress(OSError):
                    st = os.stat(source)
                    if st.st_size == old.size and st.st_mtime_ns == old.mtime_ns:
                        target = staging.files / f.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.link(source, target)
                        md5s[f.name] = old.md5
                        continue
            todo.append(f)
        return todo

    async def _fill(
        self,
        lock: EntryLock,
        key: EntryKey,
        files: list[RemoteFile],
        source: FileSource,
        last_modified: str | None,
        what: str,
        committed: Callable[[], Path | None],
    ) -> Path:
        """Download into a staging folder and commit it (or use another holder's commit)."""
        staging: Staging | None = None
        try:
            stage, done = await run_to_completion(
                self._prepare_staging, lock, files, discard=lambda result: result[0].close()
            )
            staging = stage
            md5s = dict(done)
            todo = await run_to_completion(
                self._link_unchanged, lock.home, stage, files, md5s, last_modified
            )
            if todo:
                logger.info("downloading %d of %d files of %s", len(todo), len(files), what)
                fetched = await self._download_watched(
                    lock, stage, todo, files, source, what, committed
                )
                if isinstance(fetched, Path):
                    await run_to_completion(shutil.rmtree, stage.path, True)
                    return fetched
                md5s.update(fetched)
            # Links to the previous generation are durable already; the rest is synced now.
            unsynced = [*done, *(f.name for f in todo)]
            return await run_to_completion(
                self._commit, lock, stage, key, files, md5s, unsynced, last_modified
            )
        except OSError as exc:
            if exc.errno not in _FULL_ERRNOS:
                raise
            if staging is not None:
                await run_to_completion(shutil.rmtree, staging.path, True)
            raise CacheFullError(
                f"no space left for {what} in the cache at {self.root} ({exc.strerror}): "
                "free disk space, run 'sinagot cache gc', or set [store] cache_dir to a bigger disk"
            ) from None
        finally:
            if staging is not None:
                staging.close()

    async def _download_watched(
        self,
        lock: EntryLock,
        staging: Staging,
        todo: list[RemoteFile],
        files: Sequence[RemoteFile],
        source: FileSource,
        what: str,
        committed: Callable[[], Path | None],
    ) -> dict[str, str] | Path:
        """Download ``todo``, heartbeating while requests wait on the server: the MD5s of the
        files, or the generation another holder committed meanwhile (the download is then
        abandoned)."""
        waits = NetworkWaits()
        download = asyncio.create_task(
            self._download_all(staging, todo, files, waits.watch(source), what)
        )
        watcher = asyncio.create_task(heartbeat(lock, waits, self._flush_interval, committed))
        try:
            await asyncio.wait([download, watcher], return_when=asyncio.FIRST_COMPLETED)
            downloaded = download.done()
        finally:
            for task in (download, watcher):
                task.cancel()
            await asyncio.wait([download, watcher])
        if downloaded:
            return download.result()
        found = watcher.result()
        logger.info("another process committed %s meanwhile: using its files", what)
        return found

    async def _download_all(
        self,
        staging: Staging,
        todo: list[RemoteFile],
        entry: Sequence[RemoteFile],
        source: FileSource,
        what: str,
    ) -> dict[str, str]:
        """Fetch ``todo`` (of the ``entry``'s files): as one archive where that pays, then
        what is left file by file, ``concurrent_files`` at a time; their MD5s."""
        md5s: dict[str, str] = {}
        if isinstance(source, ArchiveSource) and worth_an_archive(todo, entry):
            md5s = await fetch_archive(staging, todo, source.archive(), what)
            todo = [file for file in todo if file.name not in md5s]
        slots = asyncio.Semaphore(self.concurrent_files)
        whole = WholeFileWriter(room=4 * self.concurrent_files)

        async def fetch(file: RemoteFile) -> None:
            md5s[file.name] = await download_file(
                staging,
                file,
                source,
                what=what,
                slots=slots,
                flush_interval=self._flush_interval,
                checkpoint=self.checkpoint,
                whole=whole,
            )

        async def fetch_all() -> None:
            try:
                async with asyncio.TaskGroup() as group:
                    for file in todo:
                        group.create_task(fetch(file))
            finally:
                whole.close()

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(whole.run())
                group.create_task(fetch_all())
        except BaseExceptionGroup as errors:
            raise first_error(errors) from None
        return md5s

    def _commit(
        self,
        lock: EntryLock,
        staging: Staging,
        key: EntryKey,
        files: list[RemoteFile],
        md5s: dict[str, str],
        unsynced: list[str],
        last_modified: str | None,
    ) -> Path:
        home = lock.home
        sync_tree(staging.files, unsynced)
        with commit_lock(home):
            if not lock.still_owner():
                # Stalled, taken over, then finished: the files are verified all the same.
                logger.warning(
                    "cache entry %s was taken over while downloading; committing this finished,"
                    " verified download all the same",
                    home,
                )
            name = f"{GENERATION_PREFIX}{lock.token}"
            generation = home / name
            os.rename(staging.files, generation)
            fsync_dir(home)
            recorded = []
            for f in files:
                st = os.stat(generation / f.name)
                recorded.append(ManifestFile(f.name, f.size, md5s[f.name], st.st_mtime_ns))
            manifest = Manifest(name, tuple(recorded), last_modified, time.time())
            try:
                write_manifest(home / MANIFEST_NAME, manifest, _manifest_key(key))
            except OSError:
                shutil.rmtree(generation, ignore_errors=True)  # never referenced: nobody sees it
                raise
            shutil.rmtree(staging.path, ignore_errors=True)
            prune_generations(home)
        return generation


def _manifest_key(key: EntryKey) -> dict[str, str]:
    return {
        "server": key.server,
        "project": key.project,
        "session": key.session,
        "entry": key.entry,
    }


def _staged_bytes(staging: Staging) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(staging.path):
        for filename in filenames:
            with contextlib.suppress(OSError):
                total += os.stat(Path(dirpath, filename)).st_size
    return total
