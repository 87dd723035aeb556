"""The emulator's SQLite index: its tables, opened (and brought up to date), and its rows."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from ._records import Owner, Project, Resource

__all__ = ["Transaction", "open_index", "project_of", "resource_of"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (
    id TEXT PRIMARY KEY, project TEXT NOT NULL, label TEXT NOT NULL,
    insert_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL, UNIQUE (project, label));
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, project TEXT NOT NULL, subject_id TEXT NOT NULL, label TEXT NOT NULL,
    xsi_type TEXT NOT NULL, date TEXT NOT NULL,
    insert_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL, UNIQUE (project, label));
CREATE TABLE IF NOT EXISTS scans (
    experiment_id TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, xsi_type TEXT NOT NULL,
    series_description TEXT NOT NULL, quality TEXT NOT NULL, note TEXT NOT NULL,
    PRIMARY KEY (experiment_id, id));
CREATE TABLE IF NOT EXISTS custom_fields (
    owner_kind TEXT NOT NULL, owner_key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (owner_kind, owner_key, name));
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner_kind TEXT NOT NULL, owner_key TEXT NOT NULL,
    label TEXT NOT NULL, format TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL,
    UNIQUE (owner_kind, owner_key, label));
CREATE TABLE IF NOT EXISTS files (
    resource_id INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    digest TEXT NOT NULL, format TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL,
    PRIMARY KEY (resource_id, path));
"""
# Columns added after data directories were first written: added where missing, so an
# older data directory opens with their defaults.
_ADDED_COLUMNS = (
    ("projects", "checksums", "INTEGER NOT NULL DEFAULT 1"),
    ("experiments", "time", "TEXT NOT NULL DEFAULT ''"),
    ("experiments", "visit_id", "TEXT NOT NULL DEFAULT ''"),
    ("experiments", "age", "TEXT NOT NULL DEFAULT ''"),
    ("experiments", "modality", "TEXT NOT NULL DEFAULT ''"),
)


def open_index(path: Path) -> sqlite3.Connection:
    """The index at ``path`` (created, or given the columns added since it was written)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    for table, column, definition in _ADDED_COLUMNS:
        present = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    # Before projects and subjects had fields, those of experiments had a table of their own.
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'fields'").fetchone():
        db.executescript(
            "BEGIN; INSERT OR IGNORE INTO custom_fields"
            " SELECT 'experiment', experiment_id, name, value FROM fields;"
            " DROP TABLE fields; COMMIT;"
        )
    return db


def project_of(row: sqlite3.Row) -> Project:
    return Project(row["id"], row["name"], row["description"], bool(row["checksums"]))


def resource_of(row: sqlite3.Row) -> Resource:
    return Resource(
        id=row["id"],
        owner=Owner(row["owner_kind"], row["owner_key"]),
        label=row["label"],
        format=row["format"],
        content=row["content"],
        tags=row["tags"],
    )


class Transaction:
    """Holds ``lock`` and wraps nested calls in one SQLite transaction of ``db``.

    Each outermost one, committed or not (files may have moved), calls ``ended``: the
    store starts a new generation of what it serves.
    """

    def __init__(
        self, db: sqlite3.Connection, lock: threading.RLock, ended: Callable[[], None]
    ) -> None:
        self._db = db
        self._lock = lock
        self._ended = ended
        self._outermost = False

    def __enter__(self) -> None:
        self._lock.acquire()
        self._outermost = not self._db.in_transaction
        if self._outermost:
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._outermost:
                self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            if self._outermost:
                self._ended()
            self._lock.release()
