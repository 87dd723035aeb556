"""The daemon's backend for XNAT projects: the async XNAT connector plus the library's engine.

A job is one engine run of a session (``run_scope``, see ``sinagot.engine``),
with publication deferred to the run's last phase. The daemon journals each
phase as it starts: fetching before it hands the job to the engine's thread,
running while that thread waits (it must be durable before any script runs),
uploading without making the thread wait (see ``_phases``):

- fetching: the session's scans and derivatives listed, the inputs the
  configured tasks and modalities use fetched into the verified cache and
  linked into the work tree (once each);
- running: the session's steps on the daemon's Dask cluster, finished ones left
  *pending* in the work tree (nothing is uploaded yet);
- uploading: pending results uploaded, outputs first and ``provenance.json``
  last; then the session's stamp after these uploads is learnt, with proof that
  its scan files did not change since the fetch, so that the next poll does not
  take our own uploads for a change.

A restart in any phase runs the session again: cached inputs are not
downloaded twice, steps whose pending or stored provenance still matches are
not rerun, and derivatives the server already holds are not uploaded twice.
The engine runs on the backend's own threads; its store calls run on the
daemon's loop, where the one connection pool of the project lives.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .._report import StepStatus
from ..connectors import LoopPortal, XnatStore
from ..engine import (
    FingerprintProbe,
    Fingerprints,
    Publication,
    RunHooks,
    RunOutcome,
    Scope,
    WorkTree,
    detect_layout,
    run_scope,
    runner_for,
)
from ._backend import ListedSession, ProcessResult
from ._cluster import ClusterLease, cluster_pool
from ._configs import without_password
from ._phases import PhaseRelay
from ._states import JobState

if TYPE_CHECKING:
    from .._report import RunReport
    from ..config import Settings
    from ..connectors import AsyncXnatStore, ServerPaces

__all__ = ["XnatBackend"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class XnatBackend:
    """One dataset config with ``[store] type = "xnat"``, as the daemon drives it."""

    def __init__(self, settings: Settings, store: AsyncXnatStore, cluster: ClusterLease) -> None:
        self.settings = settings
        self.store = store
        self._cluster = cluster
        self._name = settings.config_path.stem
        # Sinagot 0.1's free-form layout, or the records one (see sinagot.engine.WorkTree).
        self._freeform, why = detect_layout(settings)
        if self._freeform:
            logger.info("%s: Sinagot 0.1's free-form layout (%s)", self._name, why)
        # One thread per concurrent job: a job's engine calls block its thread only.
        self._threads = ThreadPoolExecutor(
            max_workers=settings.daemon.max_concurrent_jobs,
            thread_name_prefix=f"sinagot-{self._name}",
        )
        self._probe = FingerprintProbe(settings, freeform=self._freeform)
        # The probe is used by one thread at a time.
        self._probe_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> XnatBackend:
        from ..connectors import AsyncXnatStore

        cluster = cluster_pool().lease(settings.dask)
        try:
            store = AsyncXnatStore.from_settings(settings)
        except BaseException:
            cluster.release()
            raise
        return cls(without_password(settings), store, cluster)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"XnatBackend({self._name!r}, {self.store!r})"

    def pace_with(self, paces: ServerPaces) -> None:
        """Send the store's requests at the pace the daemon keeps for its server."""
        client = self.store.client
        client.pace = paces.for_server(
            client.server,
            transfers=self.settings.store.max_connections,
            attempts=client.retry.attempts,
        )

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        # In the job's context: the engine's log lines belong to the job's log tail.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(context.run, fn, *args))

    async def list_sessions(self) -> Sequence[ListedSession]:
        # As the store gives it: the same list again while the server's answer is unchanged.
        return await self.store.list_sessions()

    async def pipeline(self, settings: Settings | None = None) -> Fingerprints:
        if settings is not None:
            return await asyncio.to_thread(_fingerprints_for, settings)
        async with self._probe_lock:
            return await asyncio.to_thread(self._probe.current)

    async def process_session(
        self, label: str, enter_phase: Callable[[JobState], Awaitable[None]]
    ) -> ProcessResult:
        loop = asyncio.get_running_loop()
        portal = LoopPortal(loop)
        cancel = threading.Event()
        phases = PhaseRelay(loop, portal, enter_phase)
        hooks = RunHooks(
            running=functools.partial(phases.enter, JobState.RUNNING),
            publishing=functools.partial(phases.report, JobState.UPLOADING),
            cancel=cancel,
        )
        try:
            await enter_phase(JobState.FETCHING)
            try:
                outcome = await self._blocking(
                    self._run, XnatStore.over(self.store, portal), label, hooks
                )
                await phases.settle()
            except BaseException:
                # Cancelled (job timeout, shutdown) or failed: the run stops waiting for
                # its scripts and its store calls.
                cancel.set()
                portal.cancel()
                await phases.cancel()
                raise
            await self._blocking(self._cluster.tidy)
            result = _result(outcome.report, outcome.publications[label])
            result = dataclasses.replace(result, fingerprints=outcome.fingerprints)
            if not result.ok:
                return result
            stamp = outcome.settled.get(label)
            if label in outcome.settled:
                _log_settled(label, stamp)
            return dataclasses.replace(result, settled_last_modified=stamp)
        finally:
            self.store.forget_session(label)

    def _run(self, store: XnatStore, label: str, hooks: RunHooks) -> RunOutcome:
        daemon = self.settings.daemon
        with self._cluster.using() as client:
            return run_scope(
                self.settings,
                store,
                Scope(records=(label,)),
                runner=runner_for(self.settings, client=client),
                defer_publication=True,
                script_timeout=daemon.script_timeout or daemon.job_timeout,
                hooks=hooks,
                tree=WorkTree(store.local_root, self._freeform),
            )

    async def aclose(self) -> None:
        try:
            await self.store.aclose()
            await asyncio.to_thread(self._threads.shutdown, True)
        finally:
            await asyncio.to_thread(self._cluster.release)


def _fingerprints_for(settings: Settings) -> Fingerprints:
    freeform, _ = detect_layout(settings)
    return FingerprintProbe(settings, freeform=freeform).current()


def _log_settled(label: str, stamp: str | None) -> None:
    if stamp is None:
        logger.info(
            "%s: its scan files changed since the fetch (or it could not be checked):"
            " the next listing decides whether it runs again",
            label,
        )
    else:
        logger.info("%s: processed up to its stamp %s", label, stamp)


def _result(report: RunReport, publication: Publication) -> ProcessResult:
    errors = [f"{step}: {error}" for step, error in report.errors.items()]
    errors.extend(publication.errors)
    return ProcessResult(
        ran=report.ran,
        skipped=report.skipped + report.missing_input,
        failed=report.failed + report.upstream_failed,
        uploaded=len(publication.uploaded),
        errors=tuple(errors),
        steps=tuple(
            (str(r.status), r.seconds)
            for r in report.results
            if r.status in (StepStatus.RAN, StepStatus.FAILED)
        ),
    )
