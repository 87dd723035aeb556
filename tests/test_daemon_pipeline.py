"""A change of the pipeline makes the sessions it produced stale: the journal's side, and the
daemon's (in-process, in-memory backends), ordering, status, ``plan`` and metrics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType

import pytest

from memory_daemon import Running, memory_daemon
from sinagot.cli import format_plan, format_status
from sinagot.daemon import Fingerprints, JobState, StepMark
from sinagot.daemon.internals import Journal, banners
from sinagot.errors import DaemonError


def pipeline(**steps: str) -> Fingerprints:
    """Steps named a, b, ... (units "RS/EEG/a"), each with its fingerprint; "b" reads "a"
    when ``b`` starts with "a:" (its own part after the colon)."""
    marks = {}
    for name, mark in steps.items():
        own = mark.rpartition(":")[2]
        marks[f"RS/EEG/{name}"] = StepMark(mark, own)
    return Fingerprints(MappingProxyType(marks))


P1 = pipeline(a="1", b="a1:1")


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite3")
    yield opened
    await opened.aclose()


async def _done(journal: Journal, sessions: Mapping[str, Fingerprints | None]) -> list[int]:
    """Jobs of dataset "ds" done with the given pipelines (None: not recorded)."""
    ids = await journal.apply_listing("ds", [(session, "t1") for session in sessions])
    for job_id, ran_with in zip(ids, sessions.values(), strict=True):
        await journal.begin(job_id)
        await journal.finish(job_id, "t1", "ok", [], fingerprints=ran_with)
    return ids


async def _states(journal: Journal) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {job.session: (str(job.state), job.stale_steps) for job in await journal.jobs()}


async def test_a_changed_step_stales_the_jobs_it_made_once_with_the_steps_to_run(
    journal: Journal,
) -> None:
    await journal.set_pipeline("ds", P1)
    await _done(journal, {"S-1": P1, "S-2": P1})
    changed = pipeline(a="2", b="a2:1")
    report = await journal.set_pipeline("ds", changed)
    steps = ("RS/EEG/a", "RS/EEG/b")
    assert (report.sessions, dict(report.steps)) == (2, {"RS/EEG/a": 2, "RS/EEG/b": 2})
    assert await _states(journal) == {"S-1": ("stale", steps), "S-2": ("stale", steps)}
    detail = await journal.job(1)
    assert detail is not None
    assert detail.history[-1].detail == "the pipeline changed (RS/EEG/a, RS/EEG/b): it runs again"
    # Made current again: nothing more happens to them.
    await journal.set_pipeline("ds", changed)
    again = await journal.job(1)
    assert again is not None and again.history == detail.history
    # A job done with the current pipeline is done; one done with the old one while the
    # change came is stale at once.
    (fresh, late) = await journal.apply_listing("ds", [("S-3", "t1"), ("S-4", "t1")])
    for job_id, ran_with in ((fresh, changed), (late, P1)):
        await journal.begin(job_id)
        await journal.finish(job_id, "t1", "ok", [], fingerprints=ran_with)
    states = await _states(journal)
    assert states["S-3"] == ("done", ()) and states["S-4"] == ("stale", steps)


async def test_only_steps_that_can_run_now_make_a_job_stale(journal: Journal) -> None:
    await journal.set_pipeline("ds", P1)
    await _done(journal, {"S-1": P1})
    # A step removed from the config: its derivatives stay, nothing runs, status tells.
    report = await journal.set_pipeline("ds", pipeline(a="1"))
    assert (report.sessions, dict(report.removed)) == (0, {"RS/EEG/b": 1})
    # A step whose script cannot be loaded now: unknown, neither stale nor removed.
    broken = Fingerprints(MappingProxyType({}), frozenset({"RS/EEG/a", "RS/EEG/b"}))
    report = await journal.set_pipeline("ds", broken)
    assert report.sessions == 0 and not report.removed and report.broken == ("RS/EEG/a", "RS/EEG/b")
    assert await _states(journal) == {"S-1": ("done", ())}
    # A step added: every done session runs it.
    report = await journal.set_pipeline("ds", pipeline(a="1", b="a1:1", c="1"))
    assert dict(report.steps) == {"RS/EEG/c": 1}


async def test_stale_jobs_wait_behind_new_ones_and_stay_stale_through_retries(
    journal: Journal,
) -> None:
    await journal.set_pipeline("ds", P1)
    stale = await _done(journal, {"S-1": P1, "S-2": P1})
    await journal.set_pipeline("ds", pipeline(a="2", b="a2:1"))
    (new,) = await journal.apply_listing("ds", [("S-9", "t1")])
    assert [job.id for job in await journal.claimable(["ds"], [], 1)] == [new]
    assert [job.id for job in await journal.claimable(["ds"], [], 5)] == [new, *stale]
    assert [job.id for job in await journal.claimable(["ds"], [new], 5)] == stale
    # A failed attempt of a stale job waits stale; its last one fails it for good, keeping
    # the pipeline it ran with: a change of the pipeline (a fix) retries it.
    job_id = stale[0]
    await journal.begin(job_id)
    await journal.enter(job_id, JobState.RUNNING)
    waiting = await journal.fail(job_id, "x", max_attempts=2, retry_backoff=0.0, log_tail=[])
    assert waiting.state is JobState.STALE and waiting.stale_steps
    await journal.begin(job_id)
    fixed_later = pipeline(a="3", b="a3:1")
    failed = await journal.fail(
        job_id, "y", max_attempts=2, retry_backoff=0.0, log_tail=[], fingerprints=P1
    )
    assert failed.state is JobState.FAILED and failed.stale_steps == ()
    report = await journal.set_pipeline("ds", fixed_later)
    assert report.sessions == 2
    assert (await _states(journal))["S-1"][0] == "stale"
    # A change on the server wins: the session runs as a changed one, first.
    await journal.apply_listing("ds", [("S-2", "t2")])
    assert (await _states(journal))["S-2"] == ("discovered", ())


async def test_a_preview_writes_nothing(journal: Journal) -> None:
    await journal.set_pipeline("ds", P1)
    await _done(journal, {"S-1": P1, "S-2": P1})
    before = await journal.job(1)
    preview = await journal.preview_pipeline("ds", pipeline(a="1", b="a1:2"))
    assert (preview.sessions, dict(preview.steps)) == (2, {"RS/EEG/b": 2})
    assert await journal.job(1) == before
    assert await _states(journal) == {"S-1": ("done", ()), "S-2": ("done", ())}
    assert format_plan({"datasets": {"ds": preview.to_json()}}) == (
        "ds: 2 session(s) to process again, for the steps that changed: RS/EEG/b (2)"
    )
    assert format_plan(
        {"datasets": {"ds": (await journal.preview_pipeline("ds", P1)).to_json()}}
    ) == ("ds: up to date with its pipeline, nothing to process again")


async def test_a_version_1_journal_is_upgraded_and_its_done_jobs_run_again(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL,
                session TEXT NOT NULL, last_modified TEXT NOT NULL, state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                not_before REAL NOT NULL DEFAULT 0, created REAL NOT NULL,
                updated REAL NOT NULL, log_tail TEXT NOT NULL DEFAULT '',
                UNIQUE (dataset, session));
            CREATE TABLE history (
                id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL REFERENCES jobs (id),
                at REAL NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
            INSERT INTO jobs (dataset, session, last_modified, state, created, updated)
                VALUES ('ds', 'S-1', 't1', 'done', 1, 1), ('ds', 'S-2', 't1', 'failed', 1, 1);
            PRAGMA user_version = 1;
            """
        )
    journal = await Journal.open(path)
    try:
        report = await journal.set_pipeline("ds", P1)
        # Made by a pipeline nobody recorded: it runs again (what is up to date by its
        # provenance is not recomputed); a job that failed has nothing to redo.
        assert report.sessions == 1
        states = await _states(journal)
        assert states == {"S-1": ("stale", ("RS/EEG/a", "RS/EEG/b")), "S-2": ("failed", ())}
        detail = await journal.job(1)
        assert detail is not None and "not recorded" in detail.history[-1].detail
    finally:
        await journal.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


async def _stale_jobs(running: Running, count: int) -> None:
    for _ in range(500):
        if len(await running.client.jobs(state="stale")) == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {count} stale jobs")


async def test_the_daemon_reprocesses_stale_sessions_after_new_ones_and_shows_them(
    tmp_path: Path,
) -> None:
    async with memory_daemon(
        tmp_path, pipeline_check_interval=0.05, max_concurrent_jobs=1
    ) as running:
        backend = running.backends["one"]
        backend.steps.update({"RS/EEG/a": "1", "RS/EEG/b": "1"})
        backend.sessions.update({f"REC-{n}": "t1" for n in range(1, 5)})
        await running.wait(lambda: len(backend.processed) == 4, "four sessions processed")
        await running.client.pause()
        backend.steps["RS/EEG/a"] = "2"
        await _stale_jobs(running, 4)
        # Paused: the stale sessions wait, counted in the status with the steps that changed.
        backend.sessions["REC-9"] = "t1"
        status = await running.client.status()
        (dataset,) = status["datasets"]
        assert dataset["jobs"]["stale"] == 4
        assert dataset["pipeline"]["steps"] == {"RS/EEG/a": 4}
        assert "one: 4 session(s) stale, for the steps that changed: RS/EEG/a (4)" in (
            format_status(status)
        )
        assert 'sinagot_jobs{dataset="one",state="stale"} 4.0' in await running.client.metrics()
        assert {
            "kind": "stale",
            "text": "The pipeline changed: sessions to process again, after new ones: one (4).",
        } in banners(status)
        await running.wait(lambda: backend.listings > 3, "REC-9 listed")
        for _ in range(500):
            if "REC-9" in await running.states():
                break
            await asyncio.sleep(0.02)
        await running.client.resume()
        await running.wait(lambda: len(backend.processed) == 9, "the new and the stale ones")
        # The new session first, then the stale ones.
        assert backend.processed[4] == "REC-9"
        assert sorted(backend.processed[5:]) == ["REC-1", "REC-2", "REC-3", "REC-4"]
        assert set((await running.states()).values()) == {"done"}


async def test_plan_tells_what_would_run_again_and_does_nothing(tmp_path: Path) -> None:
    # No watcher between the reloads: the change is seen by plan, then applied by a reload.
    async with memory_daemon(tmp_path, pipeline_check_interval=3600) as running:
        backend = running.backends["one"]
        backend.steps.update({"RS/EEG/a": "1", "RS/EEG/b": "1"})
        backend.sessions.update({"REC-1": "t1", "REC-2": "t1"})
        await running.wait(lambda: len(backend.processed) == 2, "two sessions processed")
        backend.steps["RS/EEG/b"] = "2"
        del backend.steps["RS/EEG/a"]
        plan = await running.client.plan()
        assert plan == {
            "datasets": {
                "one": {
                    "sessions": 2,
                    "steps": {"RS/EEG/b": 2},
                    "removed": {"RS/EEG/a": 2},
                    "broken": [],
                }
            }
        }
        assert set((await running.states()).values()) == {"done"}
        assert (await running.client.plan(["one"])) == plan
        with pytest.raises(DaemonError, match="no dataset"):
            await running.client.plan(["nope"])
        await running.client.reload()
        reloaded = running.backends["one"]
        await running.wait(lambda: len(reloaded.processed) == 2, "both processed again")
        status = await running.client.status()
        assert status["datasets"][0]["pipeline"]["removed"] == {"RS/EEG/a": 2}
        assert "no longer in the pipeline, their derivatives stay in place: RS/EEG/a (2)" in (
            format_status(status)
        )
