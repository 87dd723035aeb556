"""The state tables: every job state change the journal makes is one the table allows, and
every one the table allows is one the journal makes; anything else is refused."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest

from sinagot.daemon import FINISHED, DaemonStatus, Fingerprints, JobState, StepMark, shown_status
from sinagot.daemon.internals import (
    ALLOWED_TRANSITIONS,
    IN_FLIGHT,
    PHASES,
    STATUS_TRANSITIONS,
    TRANSITIONS,
    JobRecord,
    Journal,
    check_status_transition,
)
from sinagot.errors import DaemonError, InvalidTransitionError

# Two pipelines of one step: a job done with the first is stale under the second.
BEFORE = Fingerprints(MappingProxyType({"RS/EEG/filter": StepMark("f1", "f1")}))
AFTER = Fingerprints(MappingProxyType({"RS/EEG/filter": StepMark("f2", "f2")}))
# What runs again when its session changes on the server.
RESET_BY_A_CHANGE = FINISHED | {JobState.STALE}

ALLOWED = list(ALLOWED_TRANSITIONS)
FORBIDDEN = [
    pair for pair in itertools.product(JobState, JobState) if pair[1] not in TRANSITIONS[pair[0]]
]


def test_the_table_lists_each_allowed_pair_once_and_forbids_the_rest() -> None:
    assert len(set(ALLOWED)) == len(ALLOWED)
    assert {(old, new) for old in JobState for new in TRANSITIONS[old]} == set(ALLOWED)
    assert len(ALLOWED) + len(FORBIDDEN) == len(JobState) ** 2 == 49
    # A finished job never enters a phase nor ends again: 10 pairs are refused.
    assert sorted(FORBIDDEN) == sorted(
        (old, new)
        for old in FINISHED
        for new in JobState
        if new not in (JobState.DISCOVERED, JobState.STALE)
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite3")
    yield opened
    await opened.aclose()


async def _job_in(journal: Journal, state: JobState, session: str) -> int:
    """A new job, brought to ``state`` the way the daemon brings one there."""
    (job_id,) = await journal.apply_listing("ds", [(session, "a")])
    if state is JobState.DISCOVERED:
        return job_id
    await journal.begin(job_id)
    if state in IN_FLIGHT:
        await journal.enter(job_id, state)
    elif state in (JobState.DONE, JobState.STALE):
        # Its pipeline not recorded: any pipeline made current makes it stale.
        await journal.finish(job_id, "a", "ok", [])
        if state is JobState.STALE:
            await journal.set_pipeline("ds", AFTER)
    else:
        await journal.fail(
            job_id, "boom", max_attempts=1, retry_backoff=0.0, log_tail=[], fingerprints=BEFORE
        )
    return job_id


async def _move(journal: Journal, job_id: int, old: JobState, new: JobState) -> None:
    """Make the journal change the job from ``old`` to ``new`` by the operation that does so."""
    if new is old:
        # A note: an attempt counted (and a resumed one for a job in flight).
        await journal.begin(job_id)
    elif new in IN_FLIGHT:
        await journal.enter(job_id, new)
    elif new is JobState.DONE:
        await journal.finish(job_id, "a", "ok", [])
    elif new is JobState.FAILED:
        await journal.fail(job_id, "boom", max_attempts=0, retry_backoff=0.0, log_tail=[])
    elif new is JobState.STALE and old in FINISHED:
        # A pipeline other than the one it ran with (a failed job's is recorded as it fails).
        await journal.set_pipeline("ds", AFTER)
    elif new is JobState.STALE:
        # Done with a pipeline that changed while it ran.
        await journal.set_pipeline("ds", AFTER)
        await journal.finish(job_id, "a", "ok", [], fingerprints=BEFORE)
    elif old in RESET_BY_A_CHANGE:
        # Changed on the server (a retry, of a failed job, makes the same change).
        await journal.apply_listing("ds", [((await _job(journal, job_id)).session, "b")])
    else:
        await journal.fail(job_id, "boom", max_attempts=9, retry_backoff=0.0, log_tail=[])


async def _job(journal: Journal, job_id: int) -> JobRecord:
    detail = await journal.job(job_id)
    assert detail is not None
    return detail.job


async def _history(journal: Journal, job_id: int) -> list[JobState]:
    detail = await journal.job(job_id)
    assert detail is not None
    return [entry.state for entry in detail.history]


@pytest.mark.parametrize(("old", "new"), ALLOWED, ids=[f"{o}->{n}" for o, n in ALLOWED])
async def test_every_allowed_transition_is_one_the_journal_makes(
    journal: Journal, old: JobState, new: JobState
) -> None:
    job_id = await _job_in(journal, old, "S-1")
    before = await _history(journal, job_id)
    await _move(journal, job_id, old, new)
    assert await _history(journal, job_id) == [*before, new]


@pytest.mark.parametrize(("old", "new"), FORBIDDEN, ids=[f"{o}->{n}" for o, n in FORBIDDEN])
async def test_a_forbidden_transition_is_refused_and_changes_nothing(
    journal: Journal, old: JobState, new: JobState
) -> None:
    job_id = await _job_in(journal, old, "S-1")
    before = await journal.job(job_id)
    with pytest.raises(InvalidTransitionError) as refused:
        await _move(journal, job_id, old, new)
    assert str(refused.value).startswith(f"job {job_id} (ds/S-1) cannot go from {old} to {new}:")
    assert isinstance(refused.value, DaemonError)
    assert await journal.job(job_id) == before


async def test_set_based_writes_note_only_jobs_they_may(journal: Journal) -> None:
    jobs = {state: await _job_in(journal, state, f"S-{state}") for state in JobState}
    assert sorted(await journal.resume_in_flight()) == sorted(jobs[s] for s in IN_FLIGHT)
    # A new stamp of a runnable job is noted in its state; a finished one runs again.
    changed = await journal.apply_listing("ds", [(f"S-{state}", "b") for state in JobState])
    assert sorted(changed) == sorted(jobs[s] for s in RESET_BY_A_CHANGE)
    for state, job_id in jobs.items():
        history = await _history(journal, job_id)
        if state in RESET_BY_A_CHANGE:
            assert history[-1] is JobState.DISCOVERED
        else:
            assert history[-1] is state
            assert (await _job(journal, job_id)).last_modified == "b"


async def test_a_given_back_attempt_is_a_note_and_refused_on_a_finished_job(
    journal: Journal,
) -> None:
    running = await _job_in(journal, JobState.RUNNING, "S-1")
    await journal.give_back_attempt(running, "stop")
    assert (await _history(journal, running))[-2:] == [JobState.RUNNING, JobState.RUNNING]
    done = await _job_in(journal, JobState.DONE, "S-2")
    with pytest.raises(InvalidTransitionError, match="cannot go from done to done"):
        await journal.give_back_attempt(done, "stop")


async def test_only_phases_may_be_entered(journal: Journal) -> None:
    job_id = await _job_in(journal, JobState.RUNNING, "S-1")
    for state in set(JobState) - IN_FLIGHT:
        with pytest.raises(InvalidTransitionError, match=f"announced '{state}', which is not"):
            await journal.enter(job_id, state)
    assert (await _history(journal, job_id))[-1] is JobState.RUNNING
    assert tuple(PHASES) == (JobState.FETCHING, JobState.RUNNING, JobState.UPLOADING)


def test_the_daemon_status_changes_only_along_its_table() -> None:
    for old, new in itertools.product(DaemonStatus, DaemonStatus):
        if new in STATUS_TRANSITIONS[old]:
            check_status_transition(old, new)
        else:
            with pytest.raises(InvalidTransitionError, match=f"the daemon cannot go from {old}"):
                check_status_transition(old, new)
    # Every status but the last can reach stopped, through stopping.
    for status in set(DaemonStatus) - {DaemonStatus.STOPPING, DaemonStatus.STOPPED}:
        assert DaemonStatus.STOPPING in STATUS_TRANSITIONS[status]


def test_status_lines_show_a_pause_before_a_stop() -> None:
    assert shown_status(paused=True, stopping=True) is DaemonStatus.PAUSED
    assert shown_status(paused=False, stopping=True) is DaemonStatus.STOPPING
    assert shown_status(paused=False, stopping=False) is DaemonStatus.RUNNING
