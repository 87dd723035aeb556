"""The durable job journal: one SQLite database (WAL, synchronous=FULL) in the state dir.

Every state change is committed before the work it announces starts, so after a
crash the journal tells exactly which jobs were in flight. Every write is checked
against the job state table (:data:`~._states.TRANSITIONS`) in the transaction
that makes it: a change the table does not allow is rolled back and raised.

All SQLite calls run on one dedicated thread: the event loop never blocks on the
disk, and the connection is only ever used by the thread that created it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DaemonError
from ._backend import ListedSession
from ._job_records import (
    JOB_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    JobDetail,
    JobRecord,
    Transition,
    record_of,
)
from ._states import (
    FINISHED,
    IN_FLIGHT,
    INITIAL,
    RUNNABLE,
    JobState,
    check_phase,
    check_transition,
)

__all__ = ["Journal"]

T = TypeVar("T")

_RUNNABLE = [str(state) for state in sorted(RUNNABLE)]
_IN_FLIGHT = [str(state) for state in sorted(IN_FLIGHT)]

def _placeholders(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class Journal:
    """Async front of the SQLite journal; open with :meth:`open`, close with :meth:`aclose`."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._executor = executor
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> Journal:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sinagot-journal")
        journal = cls(path, executor)
        try:
            await journal._call(journal._connect)
        except BaseException:
            executor.shutdown(wait=True)
            raise
        return journal

    async def aclose(self) -> None:
        await self._call(self._disconnect)
        await asyncio.to_thread(self._executor.shutdown, True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- thread side ---------------------------------------------------------------

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise DaemonError(
                f"cannot open the job journal {self.path}: {exc}; check [daemon] state_dir"
            ) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._upgrade(db)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise DaemonError(
                    f"cannot open the job journal {self.path}: {exc}; check [daemon] state_dir"
                ) from exc
            raise
        self._db = db

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Bring the journal to :data:`SCHEMA_VERSION` in one transaction, or refuse it."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise DaemonError(
                f"the job journal {self.path} has schema version {version}, newer than this"
                f" Sinagot's ({SCHEMA_VERSION}): it was written by a later release; install that"
                " release again, or move the journal aside to start a new one (sessions are then"
                " checked again; up-to-date derivatives are not recomputed)"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA.split(";"):
                db.execute(statement)
            self._check_rows(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _check_rows(self, db: sqlite3.Connection) -> None:
        """Refuse a journal whose jobs this code cannot read (not one Sinagot wrote)."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        missing = [c.strip() for c in JOB_COLUMNS.split(",") if c.strip() not in columns]
        states = {row[0] for row in db.execute("SELECT DISTINCT state FROM jobs")}
        unknown = sorted(states - {str(state) for state in JobState})
        if missing or unknown:
            problem = f"columns {missing} missing" if missing else f"unknown job states {unknown}"
            raise DaemonError(
                f"the job journal {self.path} is not one this Sinagot can read ({problem}):"
                " move it aside to start a new one"
            )

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DaemonError(f"the job journal {self.path} is closed")
        return self._db

    def _transaction(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db, time.time())
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    @staticmethod
    def _log(db: sqlite3.Connection, job_id: int, now: float, state: str, detail: str) -> None:
        db.execute(
            "INSERT INTO history (job_id, at, state, detail) VALUES (?, ?, ?, ?)",
            (job_id, now, state, detail),
        )

    def _set(
        self,
        db: sqlite3.Connection,
        now: float,
        job: JobRecord,
        state: JobState,
        detail: str,
        **cols: Any,
    ) -> None:
        """Move ``job`` to ``state``, or note ``detail`` in its current one; checked first."""
        check_transition(job.title, job.state, state)
        if state != job.state or cols:
            assignments = "".join(f", {name} = ?" for name in cols)
            db.execute(
                f"UPDATE jobs SET state = ?, updated = ?{assignments} WHERE id = ?",
                (str(state), now, *cols.values(), job.id),
            )
        # else a bare note (a resume): ``updated`` keeps saying when the job last changed.
        self._log(db, job.id, now, str(state), detail)

    def _job(self, db: sqlite3.Connection, job_id: int) -> JobRecord | None:
        row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else record_of(row)

    def _known_job(self, db: sqlite3.Connection, job_id: int) -> JobRecord:
        job = self._job(db, job_id)
        if job is None:
            raise DaemonError(f"job {job_id} is not in the journal {self.path}")
        return job

    # -- async API -----------------------------------------------------------------

    def _known(self, dataset: str) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT session, last_modified FROM jobs WHERE dataset = ?", (dataset,)
        )
        return dict(rows.fetchall())

    async def known_sessions(self, dataset: str) -> dict[str, str]:
        """The last listing the journal has seen for a dataset: session -> last_modified."""
        return await self._call(self._known, dataset)

    async def compare_listing(
        self, dataset: str, listing: Sequence[ListedSession]
    ) -> list[tuple[str, str, bool]]:
        """The sessions of ``listing`` the journal has no job for at their stamp, in order:
        (label, stamp, whether it has no job at all). Writes nothing (see apply_listing)."""

        def run() -> list[tuple[str, str, bool]]:
            known = self._known(dataset)
            return [
                (session.label, session.last_modified, stamp is None)
                for session in listing
                if (stamp := known.get(session.label)) != session.last_modified
            ]

        return await self._call(run)

    async def apply_listing(self, dataset: str, changes: Iterable[tuple[str, str]]) -> list[int]:
        """Record new or changed sessions; return the ids of jobs that became runnable."""
        items = list(changes)

        def run(db: sqlite3.Connection, now: float) -> list[int]:
            runnable: list[int] = []
            for session, last_modified in items:
                row = db.execute(
                    f"SELECT {JOB_COLUMNS} FROM jobs WHERE dataset = ? AND session = ?",
                    (dataset, session),
                ).fetchone()
                if row is None:
                    cursor = db.execute(
                        "INSERT INTO jobs (dataset, session, last_modified, state, created, updated)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (dataset, session, last_modified, str(INITIAL), now, now),
                    )
                    job_id = int(cursor.lastrowid or 0)
                    self._log(db, job_id, now, str(INITIAL), "new session")
                    runnable.append(job_id)
                    continue
                job = record_of(row)
                if job.last_modified == last_modified:
                    continue
                detail = f"changed on the server ({job.last_modified} -> {last_modified})"
                if job.state in FINISHED:
                    self._set(
                        db,
                        now,
                        job,
                        JobState.DISCOVERED,
                        detail,
                        last_modified=last_modified,
                        attempts=0,
                        not_before=0.0,
                        last_error=None,
                    )
                    runnable.append(job.id)
                else:
                    # A queued or running job picks the change up: it compares stamps when
                    # it finishes and goes round again if the session moved meanwhile.
                    self._set(db, now, job, job.state, detail, last_modified=last_modified)
            return runnable

        return await self._call(self._transaction, run)

    async def resume_in_flight(self) -> list[int]:
        """Note, on jobs that were in flight when the daemon stopped, that they resume."""

        def run(db: sqlite3.Connection, now: float) -> list[int]:
            rows = db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({_placeholders(_IN_FLIGHT)})",
                _IN_FLIGHT,
            ).fetchall()
            jobs = [record_of(row) for row in rows]
            for job in jobs:
                self._set(db, now, job, job.state, "resumed after a daemon restart")
            return [job.id for job in jobs]

        return await self._call(self._transaction, run)

    async def claimable(
        self, datasets: Sequence[str], exclude: Sequence[int], limit: int
    ) -> list[JobRecord]:
        """Runnable jobs that are due, oldest first, leaving out those already claimed."""
        if not datasets or limit <= 0:
            return []

        def run() -> list[JobRecord]:
            sql = (
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({_placeholders(_RUNNABLE)})"
                f" AND not_before <= ? AND dataset IN ({_placeholders(datasets)})"
            )
            params: list[object] = [*_RUNNABLE, time.time(), *datasets]
            if exclude:
                sql += f" AND id NOT IN ({_placeholders(exclude)})"
                params.extend(exclude)
            sql += " ORDER BY not_before, id LIMIT ?"
            params.append(limit)
            return [record_of(row) for row in self._conn.execute(sql, params)]

        return await self._call(run)

    async def next_due(self, datasets: Sequence[str]) -> float | None:
        """When the earliest job waiting for a retry becomes due (epoch seconds)."""
        if not datasets:
            return None

        def run() -> float | None:
            row = self._conn.execute(
                "SELECT MIN(not_before) FROM jobs WHERE state = ? AND not_before > ?"
                f" AND dataset IN ({_placeholders(datasets)})",
                (str(JobState.DISCOVERED), time.time(), *datasets),
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._call(run)

    async def begin(self, job_id: int, max_attempts: int | None = None) -> JobRecord:
        """Start or resume a job, counting an attempt before any work is done.

        A resumed job (in flight when the daemon died) counts a new attempt too, so
        a job that kills the daemon cannot be resumed forever: once it has used
        ``max_attempts`` it is marked failed instead (check ``state`` of the result).
        """

        def run(db: sqlite3.Connection, now: float) -> JobRecord:
            job = self._known_job(db, job_id)
            resumed = job.state in IN_FLIGHT
            if resumed and max_attempts is not None and job.attempts >= max_attempts:
                error = (
                    f"the daemon stopped during each of {job.attempts} attempt(s), last while"
                    f" {job.state}: find the cause in its log, then run `sinagot retry {job_id}`"
                )
                self._set(db, now, job, JobState.FAILED, error, last_error=error)
            else:
                what = "resumed as attempt" if resumed else "attempt"
                self._set(
                    db,
                    now,
                    job,
                    job.state,
                    f"{what} {job.attempts + 1} started",
                    attempts=job.attempts + 1,
                )
            return self._known_job(db, job_id)

        return await self._call(self._transaction, run)

    async def give_back_attempt(self, job_id: int, why: str) -> None:
        """Un-count the current attempt of a job interrupted on purpose (a clean stop)."""

        def run(db: sqlite3.Connection, now: float) -> None:
            job = self._job(db, job_id)
            if job is None:
                return
            self._set(
                db,
                now,
                job,
                job.state,
                f"{why}: this attempt does not count",
                attempts=max(job.attempts - 1, 0),
            )

        await self._call(self._transaction, run)

    async def enter(self, job_id: int, phase: JobState, detail: str = "") -> None:
        """Record that the job's attempt starts ``phase`` (one of the in-flight states)."""

        def run(db: sqlite3.Connection, now: float) -> None:
            job = self._known_job(db, job_id)
            check_phase(job.title, phase)
            self._set(db, now, job, phase, detail)

        await self._call(self._transaction, run)

    async def finish(
        self,
        job_id: int,
        started_for: str,
        detail: str,
        log_tail: Sequence[str],
        settled: str | None = None,
    ) -> JobState:
        """Mark a job done, or runnable again when its session changed while it ran.

        ``settled``: the session's stamp after the job's own uploads, its inputs
        proven unchanged (see ``ProcessResult.settled_last_modified``). The job
        is then done for that stamp, whatever listings showed meanwhile: a later
        change moves the stamp past it. The caller must take ``settled`` as the
        last listing it saw of the session, or it would miss such a change.
        """
        tail = "\n".join(log_tail)

        def run(db: sqlite3.Connection, now: float) -> JobState:
            job = self._known_job(db, job_id)
            if settled is not None:
                self._set(
                    db,
                    now,
                    job,
                    JobState.DONE,
                    f"{detail}; processed up to {settled}",
                    last_modified=settled,
                    last_error=None,
                    log_tail=tail,
                )
                return JobState.DONE
            if job.last_modified != started_for:
                self._set(
                    db,
                    now,
                    job,
                    JobState.DISCOVERED,
                    f"{detail}; the session changed meanwhile, processing it again",
                    attempts=0,
                    not_before=0.0,
                    last_error=None,
                    log_tail=tail,
                )
                return JobState.DISCOVERED
            self._set(db, now, job, JobState.DONE, detail, last_error=None, log_tail=tail)
            return JobState.DONE

        return await self._call(self._transaction, run)

    async def fail(
        self,
        job_id: int,
        error: str,
        *,
        max_attempts: int,
        retry_backoff: float,
        log_tail: Sequence[str],
    ) -> JobRecord:
        """Record a failed attempt: back off for a retry, or fail for good after max_attempts."""
        tail = "\n".join(log_tail)

        def run(db: sqlite3.Connection, now: float) -> JobRecord:
            job = self._known_job(db, job_id)
            if job.attempts >= max_attempts:
                self._set(db, now, job, JobState.FAILED, error, last_error=error, log_tail=tail)
            else:
                delay = retry_backoff * 2 ** max(job.attempts - 1, 0)
                self._set(
                    db,
                    now,
                    job,
                    JobState.DISCOVERED,
                    f"{error}; retry in {delay:g} s",
                    last_error=error,
                    not_before=now + delay,
                    log_tail=tail,
                )
            return self._known_job(db, job_id)

        return await self._call(self._transaction, run)

    async def retry(self, job_id: int, who: str) -> JobRecord | None:
        """Reset a failed (or backing-off) job to run now; None if there is no such job."""

        def run(db: sqlite3.Connection, now: float) -> JobRecord | None:
            job = self._job(db, job_id)
            if job is None:
                return None
            if job.state not in (JobState.FAILED, JobState.DISCOVERED):
                raise DaemonError(
                    f"job {job_id} is {job.state}: only failed or waiting jobs can be retried"
                )
            self._set(
                db,
                now,
                job,
                JobState.DISCOVERED,
                f"retry requested by {who}",
                attempts=0,
                not_before=0.0,
            )
            return self._job(db, job_id)

        return await self._call(self._transaction, run)

    async def job(self, job_id: int) -> JobDetail | None:
        def run() -> JobDetail | None:
            db = self._conn
            job = self._job(db, job_id)
            if job is None:
                return None
            history = db.execute(
                "SELECT at, state, detail FROM history WHERE job_id = ? ORDER BY id", (job_id,)
            ).fetchall()
            (tail,) = db.execute("SELECT log_tail FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return JobDetail(
                job=job,
                history=tuple(
                    Transition(at, JobState(state), detail) for at, state, detail in history
                ),
                log_tail=tuple(tail.splitlines()),
            )

        return await self._call(run)

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        dataset: str | None = None,
        session: str | None = None,
        limit: int = 500,
    ) -> list[JobRecord]:
        """The newest jobs first; ``session``: only those whose label contains it (any case)."""

        def run() -> list[JobRecord]:
            clauses: list[str] = []
            params: list[object] = []
            if state is not None:
                clauses.append("state = ?")
                params.append(str(state))
            if dataset is not None:
                clauses.append("dataset = ?")
                params.append(dataset)
            if session:
                escaped = session.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                clauses.append("session LIKE ? ESCAPE '\\'")
                params.append(f"%{escaped}%")
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            params.append(limit)
            rows = self._conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY id DESC LIMIT ?", params
            )
            return [record_of(row) for row in rows]

        return await self._call(run)

    async def counts(self) -> dict[str, dict[str, int]]:
        """Number of jobs per dataset and state."""

        def run() -> dict[str, dict[str, int]]:
            result: dict[str, dict[str, int]] = {}
            rows = self._conn.execute(
                "SELECT dataset, state, COUNT(*) FROM jobs GROUP BY dataset, state"
            )
            for dataset, state, count in rows:
                result.setdefault(dataset, {})[state] = count
            return result

        return await self._call(run)
