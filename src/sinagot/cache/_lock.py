"""Cross-process locks of one cache entry, all built on ``fcntl.flock``.

Three kinds of lock live in an entry's home directory:

* ``lock``: the download lock, held exclusively by the one process (or thread,
  or asyncio task: each acquisition opens its own file description, and flock
  locks of two descriptions conflict even inside one process) that downloads
  the entry. The holder writes its pid, host, start time and staging folder
  into the file for diagnostics and stall detection.
* ``tmp-<token>/`` staging folders: each is flocked by the process writing
  into it. The kernel drops that flock when the process dies, so a staging
  folder whose flock can be taken belongs to a dead holder and may be resumed
  or removed; one whose flock is held is never touched.
* ``use.lock``: shared flocks of jobs using the entry (:meth:`Cache.using`);
  eviction needs it exclusively, so it never removes an entry in use.

A holder that is alive but makes no progress (e.g. SIGSTOP, a hung mount) for
``race_condition_delay`` seconds is taken over: the waiter unlinks the lock
file (under ``takeover.lock`` so that two waiters never both break it) and
locks a fresh one. Progress is bytes arriving in the holder's staging files,
or its heartbeat (:meth:`EntryLock.beat`): a holder waiting on an open request
to a server that has not sent its first byte yet is alive, and says so.
Every acquirer checks, after flock succeeds, that its descriptor is still the
file at ``lock``. A stalled holder that runs again and finishes still commits
its verified download (under ``commit.lock``, see ``_cache.py``): finished
work is never thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .._aio import run_to_completion
from ..errors import CacheLockTimeoutError

__all__ = [
    "COMMIT_NAME",
    "LOCK_NAME",
    "NEW_STAGING_PREFIX",
    "STAGING_PREFIX",
    "TAKEOVER_NAME",
    "USE_LOCK_NAME",
    "EntryLock",
    "HolderInfo",
    "Staging",
    "UseLock",
    "acquire",
    "claim_dead_stagings",
    "commit_lock",
    "create_staging",
    "try_lock",
    "try_use_lock",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_NAME = "lock"
TAKEOVER_NAME = "takeover.lock"
COMMIT_NAME = "commit.lock"
USE_LOCK_NAME = "use.lock"
STAGING_PREFIX = "tmp-"
NEW_STAGING_PREFIX = ".new-"
_MAX_INFO = 4096
# Longest pause between two polls of the lock: they only tell a dead or stalled
# holder, while a commit is seen through the watched commit point, checked this often:
_MAX_POLL = 0.25
_WATCH_POLL = 0.01


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """Who holds an entry's download lock, as written into the lock file."""

    pid: int
    host: str
    started: float
    token: str
    staging: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} since {when}"

    @staticmethod
    def parse(raw: bytes) -> HolderInfo | None:
        try:
            data = json.loads(raw)
            return HolderInfo(
                pid=int(data["pid"]),
                host=str(data["host"]),
                started=float(data["started"]),
                token=str(data["token"]),
                staging=str(data["staging"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)


def _flock_nb(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _is_current(fd: int, path: Path) -> bool:
    """True if ``fd`` is still the file at ``path`` (not unlinked by a takeover or an eviction)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class EntryLock:
    """The held download lock of one entry."""

    def __init__(self, home: Path, fd: int, token: str) -> None:
        self.home = home
        self.token = token
        self._fd = fd
        self._info: dict[str, object] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "token": token,
            "staging": "",
            "beats": 0,
        }

    def _write_info(self) -> None:
        data = json.dumps(self._info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def announce(self, staging: str) -> None:
        """Record who holds the lock and where its bytes go, for waiters and for diagnostics."""
        self._info["staging"] = staging
        self._write_info()

    def beat(self) -> None:
        """Tell waiters this holder is alive though no byte arrived (it waits on a server)."""
        beats = self._info["beats"]
        self._info["beats"] = (beats if isinstance(beats, int) else 0) + 1
        self._write_info()

    def still_owner(self) -> bool:
        """False once a waiter took the entry over (the lock file was unlinked)."""
        return _is_current(self._fd, self.home / LOCK_NAME)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def try_lock(home: Path, token: str) -> EntryLock | None:
    """Take the download lock without waiting, or None if someone holds it."""
    path = home / LOCK_NAME
    while True:
        try:
            fd = _open_lock_file(path)
        except FileNotFoundError:
            return None  # the entry is gone (evicted meanwhile): nothing to lock
        if not _flock_nb(fd, fcntl.LOCK_EX):
            os.close(fd)
            return None
        if _is_current(fd, path):
            return EntryLock(home, fd, token)
        os.close(fd)  # the file was replaced while we locked it: lock the new one


def _progress(home: Path, fd: int) -> tuple[object, ...]:
    """What changes whenever the holder writes bytes: its identity and its staging files' sizes and mtimes.

    A folder's mtime does not change while a file inside it grows, so the files
    themselves are stat-ed.
    """
    raw = os.pread(fd, _MAX_INFO, 0)
    info = HolderInfo.parse(raw)
    if info is None:
        return (raw,)
    stats: list[tuple[str, int, int]] = []
    staging = home / info.staging
    for sub in (staging, staging / "parts", staging / "files"):
        with contextlib.suppress(OSError), os.scandir(sub) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    st = e.stat(follow_symlinks=False)
                    stats.append((e.path, st.st_size, st.st_mtime_ns))
    return (raw, tuple(sorted(stats)))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _release_if_lock(result: object) -> None:
    if isinstance(result, EntryLock):
        result.release()


def _open_in_entry_folder(home: Path, path: Path) -> int:
    """Open a lock file in ``home``, making the folder; FileNotFoundError means try again.

    gc may evict the entry (its whole folder) at any moment: between mkdir and open, or
    during mkdir itself, where pathlib sees EEXIST and then no folder and raises
    FileExistsError. Both are a lost race with eviction, not an error.
    """
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError as lost_race:
        if home.exists():
            raise
        raise FileNotFoundError(str(home)) from lost_race
    return _open_lock_file(path)


@dataclass(frozen=True, slots=True)
class _Busy:
    inode: int
    progress: tuple[object, ...]
    holder: HolderInfo | None


def _poll(home: Path, token: str) -> EntryLock | _Busy:
    """One non-blocking attempt: the lock, or what the current holder looks like."""
    path = home / LOCK_NAME
    while True:
        try:
            fd = _open_in_entry_folder(home, path)
        except FileNotFoundError:
            continue
        try:
            if _flock_nb(fd, fcntl.LOCK_EX):
                if _is_current(fd, path):
                    lock = EntryLock(home, fd, token)
                    fd = -1
                    return lock
                continue
            progress = _progress(home, fd)
            return _Busy(
                os.fstat(fd).st_ino, progress, HolderInfo.parse(os.pread(fd, _MAX_INFO, 0))
            )
        finally:
            if fd >= 0:
                os.close(fd)


def _break_stalled(home: Path, busy: _Busy) -> bool:
    """Unlink the lock file of a stalled holder; True if the caller should try to lock again."""
    tfd = _open_lock_file(home / TAKEOVER_NAME)
    try:
        if not _flock_nb(tfd, fcntl.LOCK_EX):
            return False  # another waiter is taking over right now
        path = home / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            if os.fstat(fd).st_ino != busy.inode:
                return True  # someone else already took over
            if _flock_nb(fd, fcntl.LOCK_EX):
                return True  # the holder just finished or died
            if _progress(home, fd) != busy.progress:
                return False  # it moved after all
            os.unlink(path)
            return True
        finally:
            os.close(fd)
    finally:
        os.close(tfd)


async def acquire(
    home: Path,
    token: str,
    *,
    race_condition_delay: float,
    patience: float,
    what: str,
    ready: Callable[[], T | None],
    watch: Path,
) -> EntryLock | T:
    """Wait for the download lock of ``home``, taking over a holder that made no progress for a while.

    Polls with non-blocking flock and an asyncio sleep, so the event loop never
    blocks and cancelling the waiting task leaves nothing behind. Between polls,
    ``ready()`` (cheap) may return the holder's result: then waiters return it at
    once instead of taking the lock one after the other just to look. It is
    asked whenever the file ``watch`` (the commit point) is replaced or touched,
    which is checked every few milliseconds with one ``stat``: waiters see a
    commit at once without polling the lock that often.
    """
    deadline = time.monotonic() + patience
    seen: tuple[int, tuple[object, ...]] | None = None
    seen_since = time.monotonic()
    pause = 0.002
    while True:
        result = await run_to_completion(_poll, home, token, discard=_release_if_lock)
        if isinstance(result, EntryLock):
            return result
        now = time.monotonic()
        state = (result.inode, result.progress)
        if state != seen:
            seen, seen_since = state, now
        elif now - seen_since >= race_condition_delay:
            if await asyncio.to_thread(_break_stalled, home, result):
                holder = result.holder.describe() if result.holder else "an unknown process"
                logger.warning(
                    "taking over cache entry %s from %s: no progress for %.1f s",
                    what,
                    holder,
                    now - seen_since,
                )
                seen = None
                continue
            seen_since = now
        found = ready()
        if found is not None:
            return found
        if now >= deadline:
            holder = result.holder.describe() if result.holder else "an unknown process"
            raise CacheLockTimeoutError(
                f"cache entry {what} is still being downloaded by {holder} after {patience:.0f} s: "
                "wait for it or stop that process"
            )
        watched = _identity(watch)
        wake = now + min(pause, max(0.0, deadline - now))
        while (left := wake - time.monotonic()) > 0:
            await asyncio.sleep(min(_WATCH_POLL, left))
            current = _identity(watch)
            if current != watched:
                watched = current
                found = ready()
                if found is not None:
                    return found
        pause = min(pause * 2, _MAX_POLL)


@contextlib.contextmanager
def commit_lock(home: Path) -> Iterator[None]:
    """Held while a generation is made current: commits of one entry never interleave.

    Brief (a rename, a manifest, pruning): waiting for it blocks, so take it in a thread.
    """
    fd = _open_lock_file(home / COMMIT_NAME)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Staging:
    """A staging folder (``tmp-<token>/``) flocked by this process for as long as it writes into it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @property
    def parts(self) -> Path:
        return self.path / "parts"

    @property
    def files(self) -> Path:
        return self.path / "files"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _lock_dir(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    if _flock_nb(fd, fcntl.LOCK_EX):
        return fd
    os.close(fd)
    return None


def create_staging(home: Path, token: str) -> Staging:
    """A new, locked staging folder.

    It is created and locked under a hidden name and only then renamed to
    ``tmp-<token>``, so a scan for dead holders never sees it unlocked.
    """
    hidden = home / f"{NEW_STAGING_PREFIX}{token}"
    hidden.mkdir()
    fd = _lock_dir(hidden)
    if fd is None:  # pragma: no cover - nobody else knows the hidden name
        raise RuntimeError(f"cannot lock fresh staging folder {hidden}")
    try:
        (hidden / "parts").mkdir()
        (hidden / "files").mkdir()
        final = home / f"{STAGING_PREFIX}{token}"
        os.rename(hidden, final)
    except BaseException:
        # Still hidden: no scan for dead holders would ever find and remove it.
        shutil.rmtree(hidden, ignore_errors=True)
        os.close(fd)
        raise
    return Staging(final, fd)


def claim_dead_stagings(home: Path) -> list[Staging]:
    """Lock every staging folder left by a dead holder (live holders' folders are skipped)."""
    claimed: list[Staging] = []
    try:
        names = sorted(e.name for e in os.scandir(home) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return claimed
    for name in names:
        if name.startswith(STAGING_PREFIX):
            fd = _lock_dir(home / name)
            if fd is not None:
                claimed.append(Staging(home / name, fd))
    return claimed


class UseLock:
    """A shared or exclusive flock on ``use.lock`` of one entry."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def try_use_lock(home: Path, *, exclusive: bool) -> UseLock | None:
    """Non-blocking: mark the entry in use (shared), or claim it for eviction (exclusive)."""
    path = home / USE_LOCK_NAME
    operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    while True:
        try:
            fd = _open_in_entry_folder(home, path)
        except FileNotFoundError:
            continue
        if not _flock_nb(fd, operation):
            os.close(fd)
            return None
        if _is_current(fd, path):
            return UseLock(fd)
        os.close(fd)
