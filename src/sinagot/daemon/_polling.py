"""Polling a dataset: one listing per interval, its new or changed sessions into the journal.

A daemon may follow many projects on a few servers. So that no server gets
every listing at once and none waits behind the others:

- each dataset polls at its own phase of the interval (:func:`poll_phases`):
  the datasets of a server spread evenly over it, the servers interleaved;
- a server has at most ``[daemon] listings_per_server`` listings in flight
  (:class:`ServerGates`); the listing's timeout starts once it may go;
- a listing the store answers with the very object it gave last time (the
  server's answer did not change) is not compared session by session again;
- after a listing that found new or changed sessions the next one comes sooner,
  within a budget that keeps the listings as few as on the fixed schedule, and a
  server that back-pressure slows is listed less often (:mod:`._poll_pace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._datasets import ServedDataset
from ._journal import Journal
from ._one_line import one_line
from ._poll_pace import PollPace
from ._states import DatasetHealth

if TYPE_CHECKING:
    from ..config import DaemonSettings
    from ..connectors import ServerPaces

__all__ = ["Poller", "ServerGates", "poll_phases"]

logger = logging.getLogger(__name__)

BACKOFF_CAP = 600.0
MIN_LIST_TIMEOUT = 30.0


def poll_phases(datasets: Iterable[ServedDataset]) -> dict[str, float]:
    """Each dataset's phase in the poll interval, in [0, 1), by name.

    The datasets of one server are spread evenly over the interval, and the
    servers' turns interleaved, so that polls come one at a time, as far apart
    as they can be, both to each server and to the daemon.
    """
    by_server: dict[str | None, list[str]] = {}
    for dataset in sorted(datasets, key=lambda d: d.name):
        by_server.setdefault(dataset.server, []).append(dataset.name)
    turns = sorted(
        (index / len(names), server, name)
        for server, names in enumerate(by_server.values())
        for index, name in enumerate(names)
    )
    return {name: rank / len(turns) for rank, (_, _, name) in enumerate(turns)}


class ServerGates:
    """At most ``limit`` listings in flight per server, whatever project they list."""

    def __init__(self) -> None:
        self._gates: dict[str, tuple[int, asyncio.Semaphore]] = {}

    def gate(self, server: str, limit: int) -> asyncio.Semaphore:
        gate = self._gates.get(server)
        if gate is None or gate[0] != limit:
            # A reload changed the limit: listings in flight end under the old one.
            gate = self._gates[server] = (limit, asyncio.Semaphore(limit))
        return gate[1]


class Poller:
    """Polls one dataset until its task is cancelled (the daemon owns the task).

    ``settings`` gives the daemon settings in force (a reload replaces them), ``wake``
    tells the dispatcher that jobs became runnable, ``health_changed`` is called after
    each failed listing and when the server answers again (the daemon's status line
    names the datasets that are down; notifications announce them).
    ``phase`` (in [0, 1)) places the dataset's polls in the interval, ``gates`` bound
    the listings in flight per server, ``paces`` (when given) slow the polls of a
    server that back-pressure slows.
    """

    def __init__(
        self,
        dataset: ServedDataset,
        journal: Journal,
        *,
        settings: Callable[[], DaemonSettings],
        wake: asyncio.Event,
        health_changed: Callable[[], None],
        phase: float,
        gates: ServerGates,
        paces: ServerPaces | None = None,
    ) -> None:
        self.dataset = dataset
        self._journal = journal
        self._settings = settings
        self._wake = wake
        self._health_changed = health_changed
        self._gates = gates
        self._paces = paces
        self._pace = PollPace(phase)

    async def run(self) -> None:
        dataset = self.dataset
        loop = asyncio.get_running_loop()
        while True:
            dataset.poll_now.clear()
            changed = await self._poll()
            delay = self.delay(loop.time(), changed=changed)
            dataset.next_poll = time.time() + delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await dataset.poll_now.wait()

    def delay(self, now: float, *, changed: bool = False) -> float:
        """Seconds from the end of a poll, at loop time ``now``, to the next one.

        The first turn of the dataset's phase at least half an interval away: polls
        keep their place in the interval whatever a listing took, and one that ended
        late (it waited for its server) skips a turn rather than listing again at
        once behind the others. After a poll that ``changed`` something, sooner (see
        :class:`PollPace`). While the listing keeps failing: exponential backoff.
        """
        settings = self._settings()
        pace = None if self._paces is None else self._paces.get(self.dataset.server)
        delay = self._pace.after_poll(
            now,
            changed=changed,
            interval=settings.poll_interval,
            minimum=settings.min_poll_interval,
            slowdown=1.0 if pace is None else pace.poll_factor(),
        )
        if self.dataset.failures:
            # The dataset's backoff, or the server's pace if that is slower still.
            delay = max(delay, self._backoff())
        self.dataset.poll_delay = delay
        return delay

    def _backoff(self) -> float:
        interval = self._settings().poll_interval
        cap = max(interval, min(BACKOFF_CAP, 32 * interval))
        return float(min(interval * 2 ** (self.dataset.failures - 1), cap))

    async def _poll(self) -> bool:
        """List the dataset once; whether it found new or changed sessions."""
        dataset = self.dataset
        settings = self._settings()
        list_timeout = max(MIN_LIST_TIMEOUT, settings.poll_interval)
        server = dataset.server
        gate: contextlib.AbstractAsyncContextManager[object] = (
            contextlib.nullcontext()
            if server is None
            else self._gates.gate(server, settings.listings_per_server)
        )
        try:
            async with gate, asyncio.timeout(list_timeout):
                listing = await dataset.backend.list_sessions()
        except TimeoutError:
            self._failed(f"listing timed out after {list_timeout:g} s")
            return False
        except Exception as exc:
            self._failed(one_line(exc))
            return False
        dataset.last_poll = time.time()
        dataset.polls["ok"] += 1
        recovered = dataset.health is DatasetHealth.DOWN
        if recovered:
            logger.info(
                "%s: the server answers again after %d failure(s)", dataset.name, dataset.failures
            )
        dataset.health, dataset.failures, dataset.last_error = DatasetHealth.OK, 0, None
        dataset.down_since = None
        if recovered:
            self._health_changed()
        if listing is dataset.compared:
            return False
        # The journal is the record of what was seen: a finished job has set its
        # session's stamp after its own uploads there, so those are no change.
        unknown = await self._journal.compare_listing(dataset.name, listing)
        # A session new to the journal is taken if it matches the id_pattern; those first
        # ignored by this listing are summed up in one log line.
        changes = [
            (label, stamp) for label, stamp, new in unknown if not new or dataset.ids.accept(label)
        ]
        dataset.ids.report(logger)
        # Labels gone from the server are forgotten (the set stays the project's size
        # however many sessions come and go); one that comes back is reported again.
        if dataset.ids.ignored:
            dataset.ids.keep_only({session.label for session in listing})
        runnable = await self._journal.apply_listing(dataset.name, changes) if changes else []
        dataset.compared = listing
        if not changes:
            return False
        logger.info(
            "%s: %d new or changed session(s), %d job(s) queued",
            dataset.name,
            len(changes),
            len(runnable),
        )
        if runnable:
            self._wake.set()
        return True

    def _failed(self, error: str) -> None:
        dataset = self.dataset
        dataset.polls["error"] += 1
        dataset.failures += 1
        dataset.health = DatasetHealth.DOWN
        if dataset.down_since is None:
            dataset.down_since = time.time()
        dataset.last_error = error
        logger.warning(
            "%s: listing failed (%d in a row), next try in %g s: %s",
            dataset.name,
            dataset.failures,
            self._backoff(),
            error,
        )
        self._health_changed()
