"""The dispatcher and the workers: claim due jobs from the journal, attempt each on a worker.

The dispatcher claims runnable jobs that are due into a queue no longer than the
number of workers; each worker attempts one job at a time. While the daemon is
paused (``unpaused`` cleared) neither claims nor starts a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ._attempt import AttemptEnd, JobLog, Outcome, attempt
from ._datasets import ServedDataset
from ._job_records import JobRecord
from ._journal import Journal

if TYPE_CHECKING:
    from ..config import DaemonSettings
    from ._metrics import DaemonMetrics

__all__ = ["JobWorkers"]

logger = logging.getLogger(__name__)


class JobWorkers:
    """``size`` workers and their dispatcher; :meth:`start` them in the daemon's TaskGroup.

    ``settings`` and ``datasets`` give what is in force (a reload replaces both),
    ``stopping`` whether the daemon stops, and ``job_ended`` is called with the
    dataset of each job, the job as claimed and how its attempt ended (None: it did not
    end, it was cancelled or broke); ``metrics`` observes its duration.
    """

    def __init__(
        self,
        journal: Journal,
        size: int,
        *,
        unpaused: asyncio.Event,
        wake: asyncio.Event,
        settings: Callable[[], DaemonSettings],
        datasets: Callable[[], Mapping[str, ServedDataset]],
        stopping: Callable[[], bool],
        job_ended: Callable[[ServedDataset, JobRecord, AttemptEnd | None], None],
        metrics: DaemonMetrics,
        server_wait: Callable[[ServedDataset], float | None],
    ) -> None:
        self._journal = journal
        self._unpaused = unpaused
        self._wake = wake
        self._settings = settings
        self._datasets = datasets
        self._stopping = stopping
        self._job_ended = job_ended
        self._metrics = metrics
        self._server_wait = server_wait
        self._queue: asyncio.Queue[JobRecord] = asyncio.Queue(maxsize=size)
        self._claimed: set[int] = set()
        self._busy: dict[asyncio.Task[None], int] = {}
        self._live_logs: dict[int, JobLog] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._completed: dict[tuple[str, Outcome], int] = {}

    @property
    def busy_jobs(self) -> int:
        return len(self._busy)

    @property
    def queued_jobs(self) -> int:
        return self._queue.qsize()

    @property
    def completed(self) -> Mapping[tuple[str, Outcome], int]:
        """Attempts that ended since the daemon started, by dataset and outcome."""
        return self._completed

    def live_log(self, job_id: int) -> tuple[str, ...] | None:
        """The log tail of a job being attempted now; None when it is not."""
        job_log = self._live_logs.get(job_id)
        return None if job_log is None else tuple(job_log.lines)

    def start(self, tg: asyncio.TaskGroup) -> int:
        """Start the dispatcher and the workers in ``tg``; return the number of workers."""
        self._dispatcher = tg.create_task(self._dispatch_loop(), name="sinagot-dispatcher")
        self._workers = [
            tg.create_task(self._worker_loop(), name=f"sinagot-worker-{n}")
            for n in range(self._queue.maxsize)
        ]
        return len(self._workers)

    async def stop(self, grace: float) -> None:
        """Stop claiming, give busy workers ``grace`` seconds to finish their job, then cancel them."""
        assert self._dispatcher is not None
        self._dispatcher.cancel()
        busy = [task for task in self._workers if task in self._busy]
        for task in self._workers:
            if task not in self._busy:
                task.cancel()
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                logger.warning(
                    "job %d did not finish within %g s: cancelled, it resumes at the next start",
                    self._busy.get(task, -1),
                    grace,
                )
                task.cancel()
        await asyncio.wait([self._dispatcher, *self._workers])

    async def _dispatch_loop(self) -> None:
        queue = self._queue
        while True:
            await self._unpaused.wait()
            self._wake.clear()
            names = list(self._datasets())
            jobs = await self._journal.claimable(
                names, sorted(self._claimed), queue.maxsize - queue.qsize()
            )
            for job in jobs:
                self._claimed.add(job.id)
                await queue.put(job)
            if jobs:
                continue
            due = await self._journal.next_due(names)
            delay = None if due is None else max(due - time.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _worker_loop(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping():
            job = await self._queue.get()
            try:
                await self._unpaused.wait()
                dataset = self._datasets().get(job.dataset)
                if self._stopping() or dataset is None:
                    continue
                self._busy[me] = job.id
                try:
                    await self._run(dataset, job)
                finally:
                    del self._busy[me]
            finally:
                self._claimed.discard(job.id)
                self._wake.set()

    async def _run(self, dataset: ServedDataset, job: JobRecord) -> None:
        job_id = job.id
        job_log = JobLog(job_id)
        self._live_logs[job_id] = job_log
        dataset.active_jobs += 1
        begin = time.monotonic()
        end: AttemptEnd | None = None
        try:
            with job_log.capture():
                end = await attempt(
                    self._journal,
                    dataset,
                    job_id,
                    job_log,
                    settings=self._settings,
                    stopping=self._stopping,
                    server_wait=lambda: self._server_wait(dataset),
                )
            self._record(dataset.name, end.outcome)
            self._metrics.job_ended(dataset.name, end, time.monotonic() - begin)
        finally:
            dataset.active_jobs -= 1
            del self._live_logs[job_id]
            self._job_ended(dataset, job, end)

    def _record(self, name: str, outcome: Outcome) -> None:
        key = (name, outcome)
        self._completed[key] = self._completed.get(key, 0) + 1
        if outcome is Outcome.RETRY:
            self._wake.set()
