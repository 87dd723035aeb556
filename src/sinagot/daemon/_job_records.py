"""What the job journal stores: its tables (with their layout version) and its records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._states import JobState

__all__ = [
    "ADDED_COLUMNS",
    "ADDED_INDEXES",
    "JOB_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "JobDetail",
    "JobRecord",
    "Transition",
    "record_of",
    "steps_of",
]

# The journal's layout, in SQLite's user_version. Version 0 is a journal of Sinagot 0.1 made
# before the version was recorded: its tables are version 1's. Version 2 records the
# pipeline (step fingerprints) each job ran with and each dataset's current one: an older
# journal gains the tables and ADDED_COLUMNS, its jobs' pipeline unknown. A journal newer
# than this code is refused (its rows may mean what this code cannot know).
SCHEMA_VERSION = 2

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
    fingerprint_set INTEGER REFERENCES fingerprint_sets (id),
    stale_steps TEXT NOT NULL DEFAULT '',
    UNIQUE (dataset, session)
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (state, not_before);
CREATE TABLE IF NOT EXISTS fingerprint_sets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS pipelines (
    dataset TEXT PRIMARY KEY,
    fingerprint_set INTEGER NOT NULL REFERENCES fingerprint_sets (id),
    broken TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_job ON history (job_id)
"""

# Columns of ``jobs`` that version 2 added (a version 1 table gains them), with their
# declarations; the index over them comes after.
ADDED_COLUMNS = (
    ("fingerprint_set", "INTEGER REFERENCES fingerprint_sets (id)"),
    ("stale_steps", "TEXT NOT NULL DEFAULT ''"),
)
ADDED_INDEXES = "CREATE INDEX IF NOT EXISTS jobs_pipeline ON jobs (dataset, fingerprint_set)"

JOB_COLUMNS = (
    "id, dataset, session, last_modified, state, attempts, last_error, not_before, created,"
    " updated, stale_steps"
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
    # The steps a pipeline change made the job run again for (stale jobs, and such a job
    # until it is done).
    stale_steps: tuple[str, ...] = ()

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
            "stale_steps": list(self.stale_steps),
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
        stale_steps=steps_of(row[10]),
    )


def steps_of(text: str) -> tuple[str, ...]:
    """The step units of a ``stale_steps`` column ('' or a JSON list)."""
    if not text:
        return ()
    try:
        steps = json.loads(text)
    except ValueError:
        return ()
    return tuple(str(step) for step in steps) if isinstance(steps, list) else ()
