"""Polling a dataset: one listing per interval, its new or changed sessions into the journal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._backend import SessionInfo
from ._datasets import ServedDataset
from ._journal import Journal
from ._one_line import one_line
from ._states import DatasetHealth

if TYPE_CHECKING:
    from ..config import DaemonSettings

__all__ = ["Poller", "forget_absent", "listing_changes"]

logger = logging.getLogger(__name__)

BACKOFF_CAP = 600.0
MIN_LIST_TIMEOUT = 30.0


def listing_changes(
    dataset: ServedDataset, listing: Sequence[SessionInfo], known: dict[str, str]
) -> list[tuple[str, str]]:
    """The sessions of ``listing`` that are new or changed since ``known``, as (label, stamp).

    A new session whose label does not match the dataset's ``id_pattern`` is ignored;
    those first ignored by this listing are summed up in one log line.
    """
    ids = dataset.ids
    changes: list[tuple[str, str]] = []
    for session in listing:
        seen = known.get(session.label)
        if seen is None and not ids.accept(session.label):
            continue
        if seen != session.last_modified:
            changes.append((session.label, session.last_modified))
    ids.report(logger)
    return changes


def forget_absent(
    dataset: ServedDataset, known: dict[str, str], listing: Sequence[SessionInfo]
) -> None:
    """Forget the sessions (and ignored labels) that ``listing`` no longer shows.

    What the poller keeps stays the size of the project however many sessions come
    and go (a lab archiving old ones): the journal keeps their jobs, and one that
    comes back unchanged is found there, done, and not run again.
    """
    listed = {session.label for session in listing}
    for label in [label for label in known if label not in listed]:
        del known[label]
    dataset.ids.keep_only(listed)


class Poller:
    """Polls one dataset until its task is cancelled (the daemon owns the task).

    ``settings`` gives the daemon settings in force (a reload replaces them), ``wake``
    tells the dispatcher that jobs became runnable, ``listing_failed`` is called after
    each failed listing (the daemon's status line names the datasets that are down).
    """

    def __init__(
        self,
        dataset: ServedDataset,
        journal: Journal,
        *,
        settings: Callable[[], DaemonSettings],
        wake: asyncio.Event,
        listing_failed: Callable[[], None],
    ) -> None:
        self.dataset = dataset
        self._journal = journal
        self._settings = settings
        self._wake = wake
        self._listing_failed = listing_failed

    async def run(self) -> None:
        dataset = self.dataset
        while True:
            dataset.poll_now.clear()
            await self._poll()
            delay = self.delay()
            dataset.next_poll = time.time() + delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await dataset.poll_now.wait()

    def delay(self) -> float:
        """The poll interval, backing off exponentially while the listing keeps failing."""
        interval = self._settings().poll_interval
        failures = self.dataset.failures
        if failures == 0:
            return interval
        cap = max(interval, min(BACKOFF_CAP, 32 * interval))
        return float(min(interval * 2 ** (failures - 1), cap))

    async def _poll(self) -> None:
        dataset = self.dataset
        list_timeout = max(MIN_LIST_TIMEOUT, self._settings().poll_interval)
        try:
            async with asyncio.timeout(list_timeout):
                listing = await dataset.backend.list_sessions()
        except TimeoutError:
            self._failed(f"listing timed out after {list_timeout:g} s")
            return
        except Exception as exc:
            self._failed(one_line(exc))
            return
        dataset.last_poll = time.time()
        dataset.polls["ok"] += 1
        if dataset.health is DatasetHealth.DOWN:
            logger.info(
                "%s: the server answers again after %d failure(s)", dataset.name, dataset.failures
            )
        dataset.health, dataset.failures, dataset.last_error = DatasetHealth.OK, 0, None
        if dataset.known is None:
            dataset.known = await self._journal.known_sessions(dataset.name)
        known = dataset.known
        changes = listing_changes(dataset, listing, known)
        forget_absent(dataset, known, listing)
        if not changes:
            return
        before = {label: known.get(label) for label, _ in changes}
        runnable = await self._journal.apply_listing(dataset.name, changes)
        # A job that finished meanwhile may have set its settled stamp: that one stays.
        known.update(
            (label, stamp) for label, stamp in changes if known.get(label) == before[label]
        )
        logger.info(
            "%s: %d new or changed session(s), %d job(s) queued",
            dataset.name,
            len(changes),
            len(runnable),
        )
        if runnable:
            self._wake.set()

    def _failed(self, error: str) -> None:
        dataset = self.dataset
        dataset.polls["error"] += 1
        dataset.failures += 1
        dataset.health = DatasetHealth.DOWN
        dataset.last_error = error
        logger.warning(
            "%s: listing failed (%d in a row), next try in %g s: %s",
            dataset.name,
            dataset.failures,
            self.delay(),
            error,
        )
        self._listing_failed()
