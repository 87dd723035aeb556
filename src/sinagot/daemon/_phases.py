"""How the engine's thread tells the daemon's journal which phase a job enters.

The engine runs a job in a thread; the journal is written from the daemon's loop
(and its own SQLite thread). A round trip there and back costs the job a wait at
each phase, so the thread waits only for a phase that must be durable before it
goes on (:meth:`PhaseRelay.enter`): "running", because a script may kill the
daemon and the crash-loop guard then counts on the journal. A phase it only
reports (:meth:`PhaseRelay.report`: "uploading") is handed to the loop and
journalled there while the thread goes on. Either way phases are journalled in
the order the thread entered them, and the job's end waits for them all
(:meth:`PhaseRelay.settle`) or drops them (:meth:`PhaseRelay.cancel`): every
task the relay starts is awaited.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

from ..connectors import LoopPortal
from ._states import JobState

__all__ = ["PhaseRelay"]


class PhaseRelay:
    """Phases entered in a job's thread, journalled by ``enter_phase`` on ``loop``.

    ``portal`` is the job's portal into ``loop`` (cancelled with the job, which
    releases a thread waiting in :meth:`enter`). Built on the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        portal: LoopPortal,
        enter_phase: Callable[[JobState], Awaitable[None]],
    ) -> None:
        self._loop = loop
        self._portal = portal
        self._enter_phase = enter_phase
        self._order = asyncio.Lock()
        self._reported: list[asyncio.Task[None]] = []
        # Set on the loop when the job ends: a report arriving later is dropped.
        self._closed = False

    def enter(self, phase: JobState) -> None:
        """From the job's thread: journal ``phase`` and wait until it is."""
        self._portal.run(self._journal(phase))

    def report(self, phase: JobState) -> None:
        """From the job's thread: have ``phase`` journalled, without waiting for it."""
        # In the thread's context: the journal's log line belongs to the job's log tail.
        context = contextvars.copy_context()
        self._loop.call_soon_threadsafe(self._start, phase, context)

    def _start(self, phase: JobState, context: contextvars.Context) -> None:
        if not self._closed:
            task = self._loop.create_task(self._journal(phase), context=context)
            self._reported.append(task)

    async def _journal(self, phase: JobState) -> None:
        async with self._order:
            await self._enter_phase(phase)

    async def settle(self) -> None:
        """Once the job's thread is done: wait until every phase it reported is journalled
        (raising the first failure).

        Its reports have all reached the loop by then: each was queued on the loop
        before the thread ended, and so before the loop heard of its end.
        """
        self._closed = True
        for result in await asyncio.gather(*self._reported, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def cancel(self) -> None:
        """The job ends early: drop the phases not journalled yet, and later reports."""
        self._closed = True
        for task in self._reported:
            task.cancel()
        await asyncio.gather(*self._reported, return_exceptions=True)
