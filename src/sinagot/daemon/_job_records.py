"""What the job journal stores: its tables (with their layout version) and its records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._states import JobState

__all__ = [
    "JOB_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "JobDetail",
    "JobRecord",
    "Transition",
    "record_of",
]

# The journal's layout, in SQLite's user_version. Version 0 is a journal of Sinagot 0.1 made
# before the version was recorded: its tables are version 1's, so opening it only records
# the version. A later layout adds its step to Journal._upgrade; a journal newer than this code is
# refused (its rows may mean what this code cannot know).
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    session TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    not_before REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    log_tail TEXT NOT NULL DEFAULT '',
    UNIQUE (dataset, session)
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (state, not_before);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_job ON history (job_id)
"""

JOB_COLUMNS = (
    "id, dataset, session, last_modified, state, attempts, last_error, not_before, created, updated"
)


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    dataset: str
    session: str
    last_modified: str
    state: JobState
    attempts: int
    last_error: str | None
    not_before: float
    created: float
    updated: float

    @property
    def title(self) -> str:
        """How messages name the job: ``job 7 (lab/REC-1)``."""
        return f"job {self.id} ({self.dataset}/{self.session})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset,
            "session": self.session,
            "last_modified": self.last_modified,
            "state": str(self.state),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "not_before": self.not_before,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    state: JobState
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "state": str(self.state), "detail": self.detail}


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: JobRecord
    history: tuple[Transition, ...]
    log_tail: tuple[str, ...]


def record_of(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        id=row[0],
        dataset=row[1],
        session=row[2],
        last_modified=row[3],
        state=JobState(row[4]),
        attempts=row[5],
        last_error=row[6],
        not_before=row[7],
        created=row[8],
        updated=row[9],
    )


