"""The job journal on a real SQLite file: transitions, durability, resumption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sinagot.daemon import JobState
from sinagot.daemon.internals import Journal
from sinagot.errors import DaemonError


@pytest.fixture
async def journal(tmp_path: Path) -> Journal:
    opened = await Journal.open(tmp_path / "state" / "journal.sqlite3")
    yield opened  # type: ignore[misc]
    await opened.aclose()


async def test_pragmas_are_wal_and_full(journal: Journal) -> None:
    await journal.apply_listing("ds", [("REC-1", "1")])
    db = sqlite3.connect(journal.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert (
        await journal._call(lambda: journal._conn.execute("PRAGMA synchronous").fetchone()[0]) == 2
    )


async def test_new_and_changed_sessions_become_jobs(journal: Journal) -> None:
    first = await journal.apply_listing("ds", [("REC-1", "a"), ("REC-2", "a")])
    assert len(first) == 2
    assert await journal.apply_listing("ds", [("REC-1", "a")]) == []
    assert await journal.known_sessions("ds") == {"REC-1": "a", "REC-2": "a"}

    job = await journal.begin(first[0])
    assert job.attempts == 1
    await journal.enter(job.id, JobState.FETCHING)
    assert await journal.finish(job.id, job.last_modified, "ok", ["line"]) == JobState.DONE

    # Unchanged done session: nothing to do. Moved: the same job runs again.
    assert await journal.apply_listing("ds", [("REC-1", "a")]) == []
    assert await journal.apply_listing("ds", [("REC-1", "b")]) == [first[0]]
    detail = await journal.job(first[0])
    assert detail is not None
    assert detail.job.state == JobState.DISCOVERED
    assert detail.job.last_modified == "b"
    assert detail.job.attempts == 0
    assert [t.state for t in detail.history] == [
        JobState.DISCOVERED,
        JobState.DISCOVERED,
        JobState.FETCHING,
        JobState.DONE,
        JobState.DISCOVERED,
    ]
    assert detail.log_tail == ("line",)


async def test_session_changed_while_running_goes_round_again(journal: Journal) -> None:
    (job_id,) = await journal.apply_listing("ds", [("REC-1", "a")])
    job = await journal.begin(job_id)
    await journal.enter(job_id, JobState.RUNNING)
    assert await journal.apply_listing("ds", [("REC-1", "b")]) == []
    assert await journal.finish(job_id, job.last_modified, "ok", []) == JobState.DISCOVERED
    again = await journal.begin(job_id)
    assert again.last_modified == "b"
    assert await journal.finish(job_id, again.last_modified, "ok", []) == JobState.DONE


async def test_failures_back_off_then_fail_and_retry_resets(journal: Journal) -> None:
    (job_id,) = await journal.apply_listing("ds", [("REC-1", "a")])
    await journal.begin(job_id)
    first = await journal.fail(job_id, "boom", max_attempts=2, retry_backoff=60.0, log_tail=[])
    assert first.state == JobState.DISCOVERED
    assert first.last_error == "boom"
    assert first.not_before > first.updated
    # Backing off: not claimable yet, but due at not_before.
    assert await journal.claimable(["ds"], [], 10) == []
    assert await journal.next_due(["ds"]) == pytest.approx(first.not_before)

    assert (await journal.retry(job_id, "test")) is not None
    assert [j.id for j in await journal.claimable(["ds"], [], 10)] == [job_id]
    await journal.begin(job_id)
    await journal.fail(job_id, "boom", max_attempts=1, retry_backoff=0.0, log_tail=["x"])
    detail = await journal.job(job_id)
    assert detail is not None
    assert detail.job.state == JobState.FAILED
    assert (await journal.jobs(state=JobState.FAILED))[0].id == job_id
    assert await journal.counts() == {"ds": {"failed": 1}}


async def test_running_job_cannot_be_retried(journal: Journal) -> None:
    (job_id,) = await journal.apply_listing("ds", [("REC-1", "a")])
    await journal.enter(job_id, JobState.UPLOADING)
    with pytest.raises(DaemonError, match="uploading"):
        await journal.retry(job_id, "test")
    assert await journal.retry(999, "test") is None


async def test_in_flight_jobs_are_resumed_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    ids = await journal.apply_listing("ds", [("REC-1", "a"), ("REC-2", "a"), ("REC-3", "a")])
    await journal.begin(ids[0])
    await journal.enter(ids[0], JobState.RUNNING)
    await journal.begin(ids[1])
    await journal.enter(ids[1], JobState.FETCHING)
    await journal.finish(ids[1], "a", "ok", [])
    await journal.aclose()

    reopened = await Journal.open(path)
    try:
        assert await reopened.resume_in_flight() == [ids[0]]
        claim = await reopened.claimable(["ds"], [], 10)
        assert [j.id for j in claim] == [ids[0], ids[2]]
        # A resumed job counts a new attempt: the daemon died during the first one.
        assert (await reopened.begin(ids[0])).attempts == 2
        assert [j.id for j in await reopened.claimable(["ds"], [ids[0]], 10)] == [ids[2]]
        assert await reopened.claimable(["other"], [], 10) == []
    finally:
        await reopened.aclose()


async def test_a_job_that_keeps_killing_the_daemon_uses_up_its_attempts(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    (job_id,) = await journal.apply_listing("ds", [("REC-1", "a")])
    await journal.aclose()
    for attempt in (1, 2):
        # Each daemon start (re)starts the job and dies in it: nothing ends the attempt.
        journal = await Journal.open(path)
        await journal.resume_in_flight()
        job = await journal.begin(job_id, max_attempts=2)
        assert job.attempts == attempt
        await journal.enter(job_id, JobState.RUNNING)
        await journal.aclose()
    journal = await Journal.open(path)
    try:
        assert await journal.resume_in_flight() == [job_id]
        job = await journal.begin(job_id, max_attempts=2)
        assert job.state == JobState.FAILED and job.attempts == 2
        assert job.last_error is not None and f"sinagot retry {job_id}" in job.last_error
        assert await journal.claimable(["ds"], [], 10) == []
        # Stopped on purpose (SIGTERM): the attempt is given back.
        await journal.retry(job_id, "test")
        await journal.begin(job_id, max_attempts=2)
        await journal.enter(job_id, JobState.RUNNING)
        await journal.give_back_attempt(job_id, "interrupted by a daemon stop")
        detail = await journal.job(job_id)
        assert detail is not None and detail.job.attempts == 0
    finally:
        await journal.aclose()


async def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DaemonError, match="state_dir"):
        await Journal.open(blocker / "journal.sqlite3")
