"""The phases a job's engine thread enters reach the journal with one wait per job.

The thread waits only for "running" to be journalled (a script may kill the
daemon); "fetching" is journalled before the thread starts and "uploading"
while the upload goes on (``PhaseRelay`` in the daemon).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_support import wait_for_async
from daemon_xnat_support import PROJECT, add_session, complete, file_puts, write_project
from sinagot.config import load_settings
from sinagot.connectors import LoopPortal
from sinagot.daemon import JobState
from sinagot.daemon.internals import PhaseRelay, XnatBackend
from sinagot.testing import EmulatorServer

LABEL = "REC-200101-A"


class _Journal:
    """Phases as journalled; the phases in ``held`` wait for their event first."""

    def __init__(self) -> None:
        self.entered: list[JobState] = []
        self.held: dict[JobState, asyncio.Event] = {}

    async def enter(self, phase: JobState) -> None:
        held = self.held.get(phase)
        if held is not None:
            await held.wait()
        self.entered.append(phase)


async def _in_thread(fn: Callable[[], None]) -> None:
    await asyncio.to_thread(fn)


def test_a_reported_phase_does_not_make_the_thread_wait() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        journal = _Journal()
        journal.held[JobState.UPLOADING] = asyncio.Event()
        relay = PhaseRelay(loop, LoopPortal(loop), journal.enter)
        # The thread goes on while the journal holds the phase back.
        await _in_thread(lambda: relay.report(JobState.UPLOADING))
        assert journal.entered == []
        settled = asyncio.ensure_future(relay.settle())
        await asyncio.sleep(0)
        assert not settled.done()  # the job's end waits for its phases
        journal.held[JobState.UPLOADING].set()
        await settled
        assert journal.entered == [JobState.UPLOADING]

    asyncio.run(scenario())


def test_phases_are_journalled_in_the_order_the_thread_entered_them() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        journal = _Journal()
        journal.held[JobState.RUNNING] = held = asyncio.Event()
        relay = PhaseRelay(loop, LoopPortal(loop), journal.enter)
        entered = threading.Event()

        def thread() -> None:
            relay.report(JobState.RUNNING)
            relay.enter(JobState.UPLOADING)  # waits behind the report
            entered.set()

        ran = asyncio.ensure_future(_in_thread(thread))
        await wait_for_async(lambda: len(relay._reported) == 1, "the report on the loop")
        assert not entered.is_set()
        held.set()
        await ran
        await relay.settle()
        assert journal.entered == [JobState.RUNNING, JobState.UPLOADING]

    asyncio.run(scenario())


def test_a_failed_journal_write_fails_the_job_and_a_cancelled_job_drops_its_phases() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def refuse(phase: JobState) -> None:
            raise RuntimeError(f"cannot journal {phase}")

        relay = PhaseRelay(loop, LoopPortal(loop), refuse)
        await _in_thread(lambda: relay.report(JobState.UPLOADING))
        with pytest.raises(RuntimeError, match="cannot journal uploading"):
            await relay.settle()

        journal = _Journal()
        journal.held[JobState.UPLOADING] = asyncio.Event()
        relay = PhaseRelay(loop, LoopPortal(loop), journal.enter)
        await _in_thread(lambda: relay.report(JobState.UPLOADING))
        await relay.cancel()
        # A report from a thread still winding down after the job ended is dropped.
        await _in_thread(lambda: relay.report(JobState.UPLOADING))
        await asyncio.sleep(0)
        assert [task.cancelled() for task in relay._reported] == [True]
        assert journal.entered == []

    asyncio.run(scenario())


def test_the_xnat_backend_uploads_while_the_uploading_phase_is_journalled(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, LABEL)
    config, _ = write_project(tmp_path, xnat_server.url)

    async def scenario() -> None:
        journal = _Journal()
        uploading = journal.held[JobState.UPLOADING] = asyncio.Event()
        backend = XnatBackend.from_settings(load_settings(config))
        job = asyncio.ensure_future(backend.process_session(LABEL, journal.enter))
        try:
            # The outputs go up while the journal still holds "uploading" back: the
            # engine's thread did not wait for it.
            await wait_for_async(lambda: file_puts(xnat_server) > 0, "an output uploaded", 30)
            assert journal.entered == [JobState.FETCHING, JobState.RUNNING]
            uploading.set()
            result = await job
        finally:
            # A failed check leaves the job waiting: cancelled, it releases its thread.
            job.cancel()
            await asyncio.wait([job])
            await backend.aclose()
        assert result.ok, result.errors
        assert journal.entered == [JobState.FETCHING, JobState.RUNNING, JobState.UPLOADING]

    asyncio.run(scenario())
    assert complete(xnat_server, LABEL)
