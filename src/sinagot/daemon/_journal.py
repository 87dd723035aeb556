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
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..engine import Fingerprints
from ..errors import DaemonError
from ._backend import ListedSession
from ._job_records import (
    ADDED_COLUMNS,
    ADDED_INDEXES,
    JOB_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    JobDetail,
    JobRecord,
    Transition,
    record_of,
    steps_of,
)
from ._pipelines import PipelineReport
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

# Claimed first: new or changed sessions, retries, and jobs a stopped daemon left in flight.
_URGENT = [str(state) for state in sorted(RUNNABLE - {JobState.STALE})]
_IN_FLIGHT = [str(state) for state in sorted(IN_FLIGHT)]
_WAITING = [str(JobState.DISCOVERED), str(JobState.STALE)]
# The jobs whose pipeline counts: their last run ended, or they wait to run again for it.
_COMPARED = [str(JobState.DONE), str(JobState.FAILED), str(JobState.STALE)]


def _steps_text(steps: Sequence[str]) -> str:
    return json.dumps(list(steps)) if steps else ""


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
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, declaration in ADDED_COLUMNS:
                if name not in columns:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
            db.execute(ADDED_INDEXES)
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
                if job.state in FINISHED or job.state is JobState.STALE:
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
                        stale_steps="",
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
        """Runnable jobs that are due, oldest first, leaving out those already claimed.

        Stale jobs come only when no other job is due: however many a pipeline change
        made stale, new sessions do not wait behind them.
        """
        if not datasets or limit <= 0:
            return []

        def query(states: Sequence[str], wanted: int) -> list[JobRecord]:
            sql = (
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({_placeholders(states)})"
                f" AND not_before <= ? AND dataset IN ({_placeholders(datasets)})"
            )
            params: list[object] = [*states, time.time(), *datasets]
            if exclude:
                sql += f" AND id NOT IN ({_placeholders(exclude)})"
                params.extend(exclude)
            sql += " ORDER BY not_before, id LIMIT ?"
            params.append(wanted)
            return [record_of(row) for row in self._conn.execute(sql, params)]

        def run() -> list[JobRecord]:
            jobs = query(_URGENT, limit)
            if len(jobs) < limit:
                jobs.extend(query([str(JobState.STALE)], limit - len(jobs)))
            return jobs

        return await self._call(run)

    async def next_due(self, datasets: Sequence[str]) -> float | None:
        """When the earliest job waiting for a retry becomes due (epoch seconds)."""
        if not datasets:
            return None

        def run() -> float | None:
            row = self._conn.execute(
                f"SELECT MIN(not_before) FROM jobs WHERE state IN ({_placeholders(_WAITING)})"
                f" AND not_before > ? AND dataset IN ({_placeholders(datasets)})",
                (*_WAITING, time.time(), *datasets),
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
        fingerprints: Fingerprints | None = None,
    ) -> JobState:
        """Mark a job done, or runnable again when its session changed while it ran.

        ``settled``: the session's stamp after the job's own uploads, its inputs
        proven unchanged (see ``ProcessResult.settled_last_modified``). The job
        is then done for that stamp, whatever listings showed meanwhile: a later
        change moves the stamp past it. The caller must take ``settled`` as the
        last listing it saw of the session, or it would miss such a change.

        ``fingerprints``: the pipeline the job ran with. When the dataset's pipeline
        has changed since (see :meth:`set_pipeline`), the job ends stale instead of done.
        """
        tail = "\n".join(log_tail)

        def run(db: sqlite3.Connection, now: float) -> JobState:
            job = self._known_job(db, job_id)
            ran_with = self._ran_with(db, fingerprints)
            if settled is None and job.last_modified != started_for:
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
                    stale_steps="",
                    **ran_with,
                )
                return JobState.DISCOVERED
            stamp = {} if settled is None else {"last_modified": settled}
            done = detail if settled is None else f"{detail}; processed up to {settled}"
            stale = () if fingerprints is None else self._stale_steps(db, job.dataset, fingerprints)
            if stale:
                self._set(
                    db,
                    now,
                    job,
                    JobState.STALE,
                    f"{done}; the pipeline changed meanwhile ({', '.join(stale)}): it runs again",
                    attempts=0,
                    not_before=0.0,
                    last_error=None,
                    log_tail=tail,
                    stale_steps=_steps_text(stale),
                    **stamp,
                    **ran_with,
                )
                return JobState.STALE
            self._set(
                db,
                now,
                job,
                JobState.DONE,
                done,
                last_error=None,
                log_tail=tail,
                stale_steps="",
                **stamp,
                **ran_with,
            )
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
        fingerprints: Fingerprints | None = None,
        server_wait: float | None = None,
    ) -> JobRecord:
        """Record a failed attempt: back off for a retry, or fail for good after max_attempts.

        A stale job waits stale again (behind new sessions). ``fingerprints``: the pipeline
        the attempt ran with, if it got as far as planning; kept for a job that fails for
        good, so that a change of it (a script fixed) retries the job. ``server_wait``: the
        attempt failed while its server was in trouble; it does not count, and the job
        waits that long.
        """
        tail = "\n".join(log_tail)

        def run(db: sqlite3.Connection, now: float) -> JobRecord:
            job = self._known_job(db, job_id)
            if server_wait is None and job.attempts >= max_attempts:
                ran_with = self._ran_with(db, fingerprints)
                self._set(
                    db,
                    now,
                    job,
                    JobState.FAILED,
                    error,
                    last_error=error,
                    log_tail=tail,
                    stale_steps="",
                    **ran_with,
                )
            else:
                attempts, why = job.attempts, ""
                delay = retry_backoff * 2 ** max(job.attempts - 1, 0)
                if server_wait is not None:
                    attempts, delay = max(job.attempts - 1, 0), server_wait
                    why = "; its server is slowed: this attempt does not count"
                self._set(
                    db,
                    now,
                    job,
                    JobState.STALE if job.stale_steps else JobState.DISCOVERED,
                    f"{error}{why}; retry in {delay:g} s",
                    attempts=attempts,
                    last_error=error,
                    not_before=now + delay,
                    log_tail=tail,
                )
            return self._known_job(db, job_id)

        return await self._call(self._transaction, run)

    async def drop(self, job_id: int) -> None:
        """Forget a job and its history: its session has left the server.

        Not a change of state: the journal mirrors the server's sessions, and a session
        it no longer lists has nothing left to process. If the label comes back, the
        next listing finds no job for it and makes a new one.
        """

        def run(db: sqlite3.Connection, now: float) -> None:
            db.execute("DELETE FROM history WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

        await self._call(self._transaction, run)

    async def retry(self, job_id: int, who: str) -> JobRecord | None:
        """Reset a failed, stale or backing-off job to run now; None if there is no such job."""

        def run(db: sqlite3.Connection, now: float) -> JobRecord | None:
            job = self._job(db, job_id)
            if job is None:
                return None
            if job.state not in (JobState.FAILED, JobState.DISCOVERED, JobState.STALE):
                raise DaemonError(
                    f"job {job_id} is {job.state}: only failed, stale or waiting jobs can be"
                    " retried"
                )
            self._set(
                db,
                now,
                job,
                JobState.DISCOVERED,
                f"retry requested by {who}",
                attempts=0,
                not_before=0.0,
                stale_steps="",
            )
            return self._job(db, job_id)

        return await self._call(self._transaction, run)

    # -- pipelines -----------------------------------------------------------------

    def _intern(self, db: sqlite3.Connection, fingerprints: Fingerprints) -> int:
        """The id of the stored fingerprint set equal to ``fingerprints`` (stored if new)."""
        document = fingerprints.to_json()
        db.execute(
            "INSERT INTO fingerprint_sets (document) VALUES (?) ON CONFLICT (document) DO NOTHING",
            (document,),
        )
        row = db.execute("SELECT id FROM fingerprint_sets WHERE document = ?", (document,))
        return int(row.fetchone()[0])

    def _ran_with(
        self, db: sqlite3.Connection, fingerprints: Fingerprints | None
    ) -> dict[str, int]:
        """The column that records the pipeline a job ran with (none if not known)."""
        return {} if fingerprints is None else {"fingerprint_set": self._intern(db, fingerprints)}

    def _fingerprint_set(self, db: sqlite3.Connection, set_id: int) -> Fingerprints:
        (document,) = db.execute(
            "SELECT document FROM fingerprint_sets WHERE id = ?", (set_id,)
        ).fetchone()
        try:
            return Fingerprints.from_json(document)
        except ValueError:
            # Unreadable: as good as unknown, so its jobs count as made by another pipeline.
            return Fingerprints()

    def _current(self, db: sqlite3.Connection, dataset: str) -> tuple[int, Fingerprints] | None:
        row = db.execute(
            "SELECT fingerprint_set FROM pipelines WHERE dataset = ?", (dataset,)
        ).fetchone()
        return None if row is None else (int(row[0]), self._fingerprint_set(db, int(row[0])))

    def _stale_steps(
        self, db: sqlite3.Connection, dataset: str, ran_with: Fingerprints
    ) -> tuple[str, ...]:
        """The steps a job that ran with ``ran_with`` must run again for the current pipeline."""
        current = self._current(db, dataset)
        return () if current is None else current[1].compare(ran_with).stale_steps

    def _groups(
        self, db: sqlite3.Connection, dataset: str, current_id: int | None, current: Fingerprints
    ) -> Iterator[tuple[int | None, JobState, int, str, tuple[str, ...], tuple[str, ...]]]:
        """The dataset's jobs grouped by the pipeline they ran with and their state, each with
        (set id, state, count, its stale steps column, its steps to run again for ``current``,
        its steps gone from ``current``)."""
        rows = db.execute(
            "SELECT fingerprint_set, state, stale_steps, COUNT(*) FROM jobs WHERE dataset = ?"
            f" AND state IN ({_placeholders(_COMPARED)})"
            " GROUP BY fingerprint_set, state, stale_steps",
            (dataset, *_COMPARED),
        ).fetchall()
        for set_id, state_text, stale_text, count in rows:
            state = JobState(state_text)
            if set_id is None:
                # Done before the journal recorded pipelines: made by one it cannot know.
                stale = tuple(sorted(current.steps)) if state is not JobState.FAILED else ()
                removed: tuple[str, ...] = ()
            elif set_id == current_id:
                stale = removed = ()
            else:
                change = current.compare(self._fingerprint_set(db, set_id))
                stale, removed = change.stale_steps, change.removed
            yield set_id, state, count, stale_text, stale, removed

    async def set_pipeline(self, dataset: str, current: Fingerprints) -> PipelineReport:
        """Make ``current`` the dataset's pipeline; the jobs it changes become stale.

        A done or failed job whose pipeline differs in steps that ``current`` can run
        becomes stale (steps only removed, or whose script is broken now, change
        nothing); a stale job is stale for what differs now. A stale job stays stale
        even when a change is undone: it may have been processed in part since, and
        its run costs only what provenance shows out of date. One transaction, a
        statement per group of jobs that ran with the same pipeline.
        """

        def run(db: sqlite3.Connection, now: float) -> PipelineReport:
            current_id = self._intern(db, current)
            db.execute(
                "INSERT INTO pipelines (dataset, fingerprint_set, broken, updated)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET"
                " fingerprint_set = excluded.fingerprint_set, broken = excluded.broken,"
                " updated = excluded.updated",
                (dataset, current_id, json.dumps(sorted(current.broken)), now),
            )
            removed: list[tuple[tuple[str, ...], int]] = []
            newly_stale = 0
            for set_id, state, count, stale_text, stale, gone in list(
                self._groups(db, dataset, current_id, current)
            ):
                removed.append((gone, count))
                if stale and (state is not JobState.STALE or stale_text != _steps_text(stale)):
                    self._move_group(db, now, dataset, set_id, state, stale_text, stale)
                    newly_stale += count if state is not JobState.STALE else 0
            return PipelineReport.of(
                self._stale_groups(db, dataset),
                removed,
                broken=current.broken,
                newly_stale=newly_stale,
            )

        return await self._call(self._transaction, run)

    async def preview_pipeline(self, dataset: str, current: Fingerprints) -> PipelineReport:
        """What :meth:`set_pipeline` would leave stale for ``current``; writes nothing."""

        def run() -> PipelineReport:
            db = self._conn
            row = db.execute(
                "SELECT id FROM fingerprint_sets WHERE document = ?", (current.to_json(),)
            ).fetchone()
            current_id = None if row is None else int(row[0])
            groups = list(self._groups(db, dataset, current_id, current))
            return PipelineReport.of(
                [(stale, count) for *_, count, _, stale, _ in groups if stale],
                [(gone, count) for *_, count, _, _, gone in groups],
                broken=current.broken,
            )

        return await self._call(run)

    async def stale_reports(self) -> dict[str, PipelineReport]:
        """Each dataset's stale jobs, by the steps they run again for."""

        def run() -> dict[str, PipelineReport]:
            groups: dict[str, list[tuple[tuple[str, ...], int]]] = {}
            rows = self._conn.execute(
                "SELECT dataset, stale_steps, COUNT(*) FROM jobs WHERE state = ?"
                " GROUP BY dataset, stale_steps",
                (str(JobState.STALE),),
            )
            for dataset, text, count in rows:
                groups.setdefault(dataset, []).append((steps_of(text), count))
            return {dataset: PipelineReport.of(stale, ()) for dataset, stale in groups.items()}

        return await self._call(run)

    def _stale_groups(
        self, db: sqlite3.Connection, dataset: str
    ) -> list[tuple[tuple[str, ...], int]]:
        rows = db.execute(
            "SELECT stale_steps, COUNT(*) FROM jobs WHERE dataset = ? AND state = ?"
            " GROUP BY stale_steps",
            (dataset, str(JobState.STALE)),
        ).fetchall()
        return [(steps_of(text), count) for text, count in rows]

    def _move_group(
        self,
        db: sqlite3.Connection,
        now: float,
        dataset: str,
        set_id: int | None,
        state: JobState,
        stale_text: str,
        stale: tuple[str, ...],
    ) -> None:
        check_transition(f"the {state} jobs of {dataset}", state, JobState.STALE)
        where = (
            "dataset = ? AND state = ? AND stale_steps = ? AND fingerprint_set IS ?",
            (dataset, str(state), stale_text, set_id),
        )
        detail = (
            "made by a pipeline that was not recorded (an older Sinagot): it runs again"
            if set_id is None
            else f"the pipeline changed ({', '.join(stale)}): it runs again"
        )
        db.execute(
            "INSERT INTO history (job_id, at, state, detail)"
            f" SELECT id, ?, ?, ? FROM jobs WHERE {where[0]}",
            (now, str(JobState.STALE), detail, *where[1]),
        )
        db.execute(
            "UPDATE jobs SET state = ?, stale_steps = ?, attempts = 0, not_before = 0,"
            f" updated = ? WHERE {where[0]}",
            (str(JobState.STALE), _steps_text(stale), now, *where[1]),
        )

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
