"""The daemon's backend for XNAT projects: the connectors' XnatStore plus the library's engine.

A session goes through three phases, each announced (and journalled) first:

- fetching: list the session's scans and derivatives, download the inputs the
  configured tasks and modalities use into the verified cache;
- running: the engine runs the record's steps on the daemon's Dask cluster and
  leaves finished ones *pending* in the work tree (nothing is uploaded yet);
- uploading: pending results are uploaded, outputs first and
  ``provenance.json`` last; then the session's stamp after these uploads is
  learnt, with proof that its scan files did not change since the fetch, so
  that the next poll does not take our own uploads for a change.

A restart in any phase runs the session again: cached inputs are not
downloaded twice, steps whose pending or stored provenance still matches are
not rerun, and derivatives the server already holds are not uploaded twice.
Blocking engine calls run on the backend's own threads, never on the daemon's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .._engine import Publication, Scope, publish_pending, run_scope
from ..connectors import DataRow
from ..errors import StoreError
from ._backend import ProcessResult, SessionInfo
from ._cluster import ClusterLease, cluster_pool
from ._states import JobState

if TYPE_CHECKING:
    from .._report import RunReport
    from ..config import Settings
    from ..connectors import XnatStore

__all__ = ["XnatBackend"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class XnatBackend:
    """One dataset config with ``[store] type = "xnat"``, as the daemon drives it."""

    def __init__(self, settings: Settings, store: XnatStore, cluster: ClusterLease) -> None:
        self.settings = settings
        self.store = store
        self._cluster = cluster
        self._name = settings.config_path.stem
        # One thread per concurrent job: a job's engine calls block its thread only.
        self._threads = ThreadPoolExecutor(
            max_workers=settings.daemon.max_concurrent_jobs,
            thread_name_prefix=f"sinagot-{self._name}",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> XnatBackend:
        from ..connectors import XnatStore

        cluster = cluster_pool().lease(settings.dask)
        try:
            store = XnatStore.from_settings(settings)
        except BaseException:
            cluster.release()
            raise
        return cls(settings, store, cluster)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"XnatBackend({self._name!r}, {self.store!r})"

    async def _blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(fn, *args, **kwargs))

    async def list_sessions(self) -> Sequence[SessionInfo]:
        listing = await self.store.alist_sessions()
        return [SessionInfo(session.label, session.last_modified) for session in listing]

    async def process_session(
        self, label: str, enter_phase: Callable[[JobState], Awaitable[None]]
    ) -> ProcessResult:
        try:
            await enter_phase(JobState.FETCHING)
            row = DataRow(id=label)
            await self.store.apopulate_row(row)
            await self._fetch_inputs(row)

            await enter_phase(JobState.RUNNING)
            report = await self._run(row)

            await enter_phase(JobState.UPLOADING)
            # Successful steps are published even if others failed: a retry reruns only those.
            publication = await self._blocking(publish_pending, self.store, row)
            result = _result(report, publication)
            if not result.ok:
                return result
            return dataclasses.replace(result, settled_last_modified=await self._settle(label))
        finally:
            self.store.forget_session(label)

    async def _settle(self, label: str) -> str | None:
        """The session's stamp after our uploads, if the inputs we processed are unchanged."""
        try:
            stamp = await self.store.asettled_stamp(label)
        except StoreError as exc:
            # Not fatal: the job is done for its first stamp and the next poll checks again.
            logger.warning("%s: cannot learn the session's stamp after the upload: %s", label, exc)
            return None
        if stamp is None:
            logger.info(
                "%s: its scan files changed since the fetch (or have no digests):"
                " the next listing decides whether it runs again",
                label,
            )
        else:
            logger.info("%s: processed up to its stamp %s", label, stamp)
        return stamp

    async def _fetch_inputs(self, row: DataRow) -> None:
        wanted = {
            f"{task.name}/{modality}"
            for task in self.settings.tasks.values()
            for modality in task.modalities
        }
        entries = [entry for path, entry in sorted(row.entries.items()) if path in wanted]
        # One entry at a time (its files download in parallel): other jobs fill the pool.
        for entry in entries:
            await self.store.aget_fileset(entry)
        logger.info("%s: %d input resource(s) in the cache", row.id, len(entries))

    async def _run(self, row: DataRow) -> RunReport:
        cancel = threading.Event()
        try:
            report = await self._blocking(self._run_on_cluster, row, cancel)
        finally:
            # Cancelled (job timeout, shutdown): the run stops waiting for its scripts.
            cancel.set()
        await self._blocking(self._cluster.tidy)
        return report

    def _run_on_cluster(self, row: DataRow, cancel: threading.Event) -> RunReport:
        daemon = self.settings.daemon
        with self._cluster.using() as client:
            return run_scope(
                self.settings,
                self.store,
                [row],
                Scope(records=(row.id,)),
                client=client,
                defer_publication=True,
                script_timeout=daemon.script_timeout or daemon.job_timeout,
                cancel=cancel,
            )

    async def aclose(self) -> None:
        try:
            await asyncio.to_thread(self.store.close)
            await asyncio.to_thread(self._threads.shutdown, True)
        finally:
            await asyncio.to_thread(self._cluster.release)


def _result(report: RunReport, publication: Publication) -> ProcessResult:
    errors = [f"{step}: {error}" for step, error in report.errors.items()]
    errors.extend(publication.errors)
    return ProcessResult(
        ran=report.ran,
        skipped=report.skipped + report.missing_input,
        failed=report.failed + report.upstream_failed,
        uploaded=len(publication.uploaded),
        errors=tuple(errors),
    )
