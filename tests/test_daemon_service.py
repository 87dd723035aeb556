"""The service loop in-process, with an in-memory backend and a real journal and socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from memory_daemon import MemoryBackend, Running, memory_daemon
from sinagot.daemon import DaemonStatus, JobState


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with memory_daemon(tmp_path) as daemon:
        yield daemon


async def _only_rec_1_fails(running: Running, backend: MemoryBackend) -> dict[str, Any]:
    """List REC-1 and REC-2; once REC-2 is processed and REC-1 failed for good, return its job."""
    backend.sessions.update({"REC-1": "a", "REC-2": "a"})
    await running.wait(lambda: backend.processed == ["REC-2"], "the other job")
    for _ in range(100):
        if (await running.states())["REC-1"] == "failed":
            break
        await asyncio.sleep(0.05)
    (job,) = await running.client.jobs(state="failed")
    return job


async def test_unchanged_listing_does_no_work(running: Running) -> None:
    backend = running.backends["one"]
    backend.sessions.update({"REC-1": "a", "REC-2": "a"})
    await running.wait(lambda: len(backend.processed) == 2, "two sessions processed")
    listings = backend.listings
    detail_before = await running.client.job(1)
    await running.wait(lambda: backend.listings >= listings + 5, "five more polls")
    assert backend.processed == ["REC-1", "REC-2"]
    assert (await running.client.job(1))["history"] == detail_before["history"]


async def test_pause_holds_new_jobs_until_resume(running: Running) -> None:
    backend = running.backends["one"]
    await running.client.pause()
    backend.sessions["REC-1"] = "a"
    await running.wait(lambda: backend.listings >= 5, "polls while paused")
    assert await running.states() == {"REC-1": "discovered"}
    assert (await running.client.status())["paused"] is True
    assert "sinagot_paused 1" in await running.client.metrics()
    await running.client.resume()
    await running.wait(lambda: backend.processed == ["REC-1"], "the job after resume")


async def test_job_timeout_fails_the_job_and_the_daemon_goes_on(running: Running) -> None:
    backend = running.backends["one"]
    backend.hang.add("REC-1")
    job = await _only_rec_1_fails(running, backend)
    assert job["attempts"] == 2
    assert job["last_error"] == "timed out after 0.5 s ([daemon] job_timeout)"
    metrics = await running.client.metrics()
    assert 'sinagot_job_attempts_total{dataset="one",outcome="retry"} 1' in metrics
    assert 'sinagot_job_attempts_total{dataset="one",outcome="failed"} 1' in metrics


async def test_changed_session_is_processed_again(running: Running) -> None:
    backend = running.backends["one"]
    backend.sessions["REC-1"] = "a"
    await running.wait(lambda: backend.processed == ["REC-1"], "first run")
    backend.sessions["REC-1"] = "b"
    await running.wait(lambda: backend.processed == ["REC-1", "REC-1"], "second run")
    (job,) = await running.client.jobs()
    assert job["last_modified"] == "b"


async def test_reload_swaps_datasets_and_closes_old_backends(running: Running) -> None:
    one = running.backends["one"]
    second = running.configs["two"]
    running.daemon.config_paths = (running.configs["one"], second)
    answer = await running.client.reload()
    assert answer == {"reloaded": True, "datasets": ["one", "two"]}
    await running.wait(lambda: one.closed, "the old backend closed")
    running.backends["two"].sessions["REC-9"] = "x"
    await running.wait(lambda: running.backends["two"].processed == ["REC-9"], "the new dataset")
    status = await running.client.status()
    assert [d["name"] for d in status["datasets"]] == ["one", "two"]
    polled = await running.client.poll(["two"])
    assert polled == {"polling": ["two"]}


async def test_running_job_shows_its_live_log_tail(running: Running) -> None:
    backend = running.backends["one"]
    backend.hang.add("REC-1")
    backend.sessions["REC-1"] = "a"
    await running.wait(lambda: running.daemon.busy_jobs == 1, "the job running")
    for _ in range(100):
        detail = await running.client.job(1)
        if detail["state"] == "running":
            break
        await asyncio.sleep(0.02)
    assert detail["state"] == "running"
    assert any(line.endswith("job 1 (one/REC-1): running") for line in detail["log_tail"])


async def test_reload_with_a_new_id_pattern_picks_up_ignored_sessions(running: Running) -> None:
    backend = running.backends["one"]
    backend.sessions.update({"REC-1": "a", "SUB-1": "a"})
    await running.wait(lambda: backend.processed == ["REC-1"], "REC-1 processed")
    listings = backend.listings
    await running.wait(lambda: backend.listings >= listings + 3, "more polls")
    assert backend.processed == ["REC-1"]
    config = running.configs["one"]
    config.write_text(config.read_text().replace(r'"REC-\\d+"', r'"(REC|SUB)-\\d+"'))
    await running.client.reload()
    await running.wait(lambda: running.backends["one"].processed == ["SUB-1"], "SUB-1 processed")


async def test_a_backend_that_announces_no_phase_fails_its_job(running: Running) -> None:
    backend = running.backends["one"]
    backend.announce["REC-1"] = (JobState.FETCHING, JobState.DONE)
    job = await _only_rec_1_fails(running, backend)
    assert job["session"] == "REC-1"
    refusal = "job 1 (one/REC-1): the backend announced 'done', which is not a phase"
    assert refusal in job["last_error"]


async def test_the_status_follows_pause_resume_and_reload(running: Running) -> None:
    daemon = running.daemon
    await running.wait(lambda: daemon.status is DaemonStatus.RUNNING, "the daemon running")
    status = await running.client.status()
    assert (status["status"], status["paused"], status["stopping"]) == ("running", False, False)
    await running.client.pause()
    status = await running.client.status()
    assert (status["status"], status["paused"]) == ("paused", True)
    await running.client.reload()
    assert (await running.client.status())["status"] == "paused"
    await running.client.resume()
    assert (await running.client.status())["status"] == "running"
    daemon.request_stop()
    await running.task
    assert (daemon.status, daemon.stopping) == (DaemonStatus.STOPPED, True)


async def test_a_pause_during_a_reload_holds_jobs_and_shows_once_it_ends(
    running: Running,
) -> None:
    daemon = running.daemon
    await running.wait(lambda: daemon.status is DaemonStatus.RUNNING, "the daemon running")
    running.loading.clear()
    reload = asyncio.create_task(daemon.reload("test"))
    await running.wait(lambda: daemon.status is DaemonStatus.RELOADING, "the reload")
    daemon.pause()
    status = await running.client.status()
    assert (status["status"], status["paused"]) == ("reloading", True)
    assert daemon.status_line().startswith("paused: ")
    running.loading.set()
    assert await reload == ["one"]
    assert daemon.status is DaemonStatus.PAUSED
    running.backends["one"].sessions["REC-1"] = "a"
    await running.wait(lambda: running.backends["one"].listings >= 3, "polls while paused")
    assert await running.states() == {"REC-1": "discovered"}
    daemon.resume()
    assert daemon.status is DaemonStatus.RUNNING
    await running.wait(lambda: running.backends["one"].processed == ["REC-1"], "the job")
