"""A persistent MD5 cache keyed by (path, size, mtime_ns), so unchanged files are never re-read.

It lives in SQLite (WAL) under ``<local_root>/.sinagot/`` so several processes
can share it; the whole table is read once when opened (it is small: one row
per input file) and new digests are written back in one transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Self

from .._fs import md5_file

__all__ = ["ChecksumCache"]

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checksums (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    md5 TEXT NOT NULL
)
"""


def _open(path: Path) -> sqlite3.Connection:
    """Connect to the cache at ``path`` (created if needed), in WAL mode.

    Setting WAL mode can fail at once with "database is locked", busy timeout or not,
    while another connection opens the same file (two jobs of a daemon starting
    together): connections are set up one at a time, under a file lock.
    """
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        db = sqlite3.connect(path, timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            db.commit()
        except BaseException:
            db.close()
            raise
    return db


class ChecksumCache:
    """MD5 digests of local files, recomputed only when size or mtime_ns change."""

    def __init__(self, root: Path) -> None:
        directory = root / ".sinagot"
        directory.mkdir(parents=True, exist_ok=True)
        self._db = _open(directory / "checksums.sqlite")
        try:
            self._known: dict[str, tuple[int, int, str]] = {
                path: (size, mtime_ns, md5)
                for path, size, mtime_ns, md5 in self._db.execute("SELECT * FROM checksums")
            }
        except BaseException:
            self._db.close()
            raise
        self._pending: dict[str, tuple[int, int, str]] = {}
        self.hashed = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def md5(self, path: Path) -> str:
        """The MD5 of ``path``; raises FileNotFoundError if it does not exist."""
        key = str(path)
        stat = os.stat(path)
        known = self._pending.get(key) or self._known.get(key)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        digest = md5_file(path)
        self.hashed += 1
        self._pending[key] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest

    def flush(self) -> None:
        if not self._pending:
            return
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?)",
                [(path, *value) for path, value in self._pending.items()],
            )
        self._known.update(self._pending)
        self._pending.clear()

    def close(self) -> None:
        try:
            self.flush()
        except sqlite3.Error as exc:
            # Losing cached digests only costs re-hashing later; never fail a run for it.
            _log.warning("could not save the checksum cache: %s", exc)
        finally:
            self._db.close()
