"""One Dask cluster per ``[dask]`` setting for the whole daemon process, shared by its datasets.

Backends take a :class:`ClusterLease` when they are built and give it back when
closed, so a reload (new backends built before the old ones close) keeps the
running cluster; the last lease given back closes it. The cluster starts on
first use, not at start-up, so a daemon with nothing to do starts no workers.
Every method blocks: call them from a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import check_available, open_client
from ..errors import ConfigError, DaemonError, SinagotError
from ._memory import trim_free_memory

if TYPE_CHECKING:
    from ..config import DaskSettings

__all__ = [
    "ClusterLease",
    "ClusterPool",
    "cluster_pool",
    "forget_finished_spans",
    "forget_key_names",
    "forget_span_metrics",
]

logger = logging.getLogger(__name__)

_QUIET_HISTORY = {
    "distributed.admin.system-monitor.log-length": 120,
    "distributed.admin.log-length": 1000,
    # The last messages and transitions of each scheduler/worker stream, 1,000 by
    # default: they hold every task with its step spec, a few KiB each.
    "distributed.admin.low-level-log-length": 100,
    # Past computations (each with its task groups) shown by the dashboard.
    "distributed.diagnostics.computations.max-history": 10,
    # A statistical profiler sampling every thread every 10 ms, kept for an hour.
    "distributed.worker.profile.enabled": False,
}


# Dask's scheduler keeps every span (Dask's record of a computation, with its task
# groups) for its lifetime (dask/distributed#7977): a new one each time work arrives
# on an idle cluster, so one per job for a daemon. A scheduler the daemon started
# forgets finished spans this long after they end (a worker's heartbeat naming a
# forgotten span makes the scheduler close that worker: heartbeats come every 0.5 s
# to a few seconds), checked at most this often.
SPAN_RETENTION = 120.0
TIDY_INTERVAL = 30.0
# A cluster the daemon started is replaced after this long (see _Shared).
MAX_CLUSTER_AGE = 7 * 24 * 3600.0


# How often the daemon checks that a batch-job cluster still has all its jobs.
KEEP_JOBS_INTERVAL = 5.0


class _JobKeeper:
    """Submits again the batch jobs of a dask-jobqueue cluster that ended under it.

    A job the batch system ended (``scancel``, its walltime, a lost node) takes its
    worker along, and dask-jobqueue does not replace it: the tasks would wait for a
    worker for good. Once Dask has given the worker up (after
    ``distributed.deploy.lost-worker-timeout``), scaling the cluster to its own size
    again submits a new job; the scheduler then runs the lost worker's tasks there.
    """

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._jobs = len(cluster.worker_spec)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="sinagot-jobqueue-keeper", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(KEEP_JOBS_INTERVAL):
            running = len(self._cluster.workers)
            if running >= self._jobs:
                continue
            logger.warning(
                "%d of the %d batch job(s) of the Dask cluster ended: submitting again",
                self._jobs - running,
                self._jobs,
            )
            try:
                self._cluster.scale(jobs=self._jobs)
            except Exception as exc:
                # A batch system that refuses now may take the job at the next check.
                logger.warning("could not submit the batch job(s): %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(KEEP_JOBS_INTERVAL)


class _Generation:
    """One started cluster and its client, with the jobs using it now."""

    def __init__(self, settings: DaskSettings, secrets_dir: Path | None) -> None:
        self.stack = ExitStack()
        try:
            self.client = _connect(settings, self.stack, secrets_dir)
            if settings.jobqueue is not None:
                # Stopped before the cluster closes (the stack unwinds in reverse).
                self.stack.callback(_JobKeeper(self.client.cluster).stop)
        except BaseException:
            self.stack.close()
            raise
        self.started = time.monotonic()
        self.users = 0


class _Shared:
    """The cluster of one ``[dask]`` setting, started on first use.

    A cluster the daemon started is replaced once it is ``MAX_CLUSTER_AGE`` old
    (its TLS certificate expires after a year, and Dask's processes keep some
    history): jobs that start then get a new one, and the old one closes when
    the last job using it ends.
    """

    def __init__(self, settings: DaskSettings, secrets_dir: Path | None) -> None:
        self.settings = settings
        self.secrets_dir = secrets_dir
        self.leases = 0
        self.lock = threading.Lock()
        self.current: _Generation | None = None
        self.retiring: list[_Generation] = []
        self.last_tidy = time.monotonic()

    def tidy(self) -> None:
        """Make the cluster forget finished work, if it is the daemon's own, then give
        the memory freed back to the system."""
        with self.lock:
            generation = self.current
            now = time.monotonic()
            if now - self.last_tidy < TIDY_INTERVAL:
                return
            self.last_tidy = now
        if generation is not None and self.settings.address is None:
            self._forget_finished(generation.client)
        trim_free_memory()

    @staticmethod
    def _forget_finished(client: Any) -> None:
        try:
            forgotten = client.run_on_scheduler(forget_finished_spans, SPAN_RETENTION)
            dropped = client.run(forget_span_metrics)
            client.run_on_scheduler(forget_key_names)
            client.run(forget_key_names)
        except Exception as exc:
            # Housekeeping on Dask's internals: whatever goes wrong, no job may fail of it.
            logger.warning("could not tidy the Dask cluster: %s: %s", type(exc).__name__, exc)
            return
        logger.debug(
            "the Dask scheduler forgot %d finished span(s), its workers %d metric(s)",
            forgotten,
            sum(dropped.values()),
        )

    def acquire(self) -> _Generation:
        closing: _Generation | None = None
        with self.lock:
            current = self.current
            if (
                current is not None
                and self.settings.address is None
                and time.monotonic() - current.started > MAX_CLUSTER_AGE
            ):
                logger.info("the Dask cluster is %g s old: starting a new one", MAX_CLUSTER_AGE)
                if current.users == 0:
                    closing = current
                else:
                    self.retiring.append(current)
                current = self.current = None
            if current is None:
                current = self.current = _Generation(self.settings, self.secrets_dir)
            current.users += 1
        if closing is not None:
            _close_generation(closing)
        return current

    def release(self, generation: _Generation) -> None:
        with self.lock:
            generation.users -= 1
            done = generation in self.retiring and generation.users == 0
            if done:
                self.retiring.remove(generation)
        if done:
            _close_generation(generation)

    def close(self) -> None:
        with self.lock:
            generations = [g for g in (self.current, *self.retiring) if g is not None]
            self.current, self.retiring = None, []
        for generation in generations:
            _close_generation(generation)


def _close_generation(generation: _Generation) -> None:
    generation.stack.close()
    logger.info("Dask cluster closed")


def _connect(settings: DaskSettings, stack: ExitStack, secrets_dir: Path | None) -> Any:
    if not logger.isEnabledFor(logging.DEBUG):
        # The cluster's start/stop chatter would drown the daemon's one-line events.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if settings.address is None:
        # The scheduler (and a LocalCluster's workers) live in the daemon: keep their
        # in-memory history short (by default an hour of monitor samples and profiles,
        # 10,000 log lines each).
        importlib.import_module("dask").config.set(_QUIET_HISTORY)
    try:
        return open_client(settings, stack, secrets_dir=secrets_dir)
    except SinagotError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise DaemonError(str(exc)) from exc


def forget_finished_spans(older_than: float, dask_scheduler: Any) -> int:
    """Drop the spans that ended ``older_than`` seconds ago and whose tasks are all
    forgotten; return how many. Runs on the scheduler's event loop (``run_on_scheduler``).

    Only spans that ended a while ago: workers report a span's metrics with their
    next heartbeats, and the scheduler closes a worker that names an unknown span.
    """
    spans = dask_scheduler.extensions.get("spans")
    if spans is None:
        return 0
    horizon = time.time() - older_than
    groups = dask_scheduler.task_groups
    gone: set[str] = set()
    for root in spans.root_spans:
        if (
            root.done
            and root.stop < horizon
            and all(groups.get(group.name) is not group for group in root.traverse_groups())
        ):
            gone.update(span.id for span in root.traverse_spans())
    if not gone:
        return 0
    spans.root_spans[:] = [span for span in spans.root_spans if span.id not in gone]
    for index in (spans.spans_search_by_name, spans.spans_search_by_tag):
        for key in list(index):
            kept = [span for span in index[key] if span.id not in gone]
            if kept:
                index[key] = kept
            else:
                del index[key]
    for span_id in gone:
        del spans.spans[span_id]
    return len(gone)


def forget_span_metrics(dask_worker: Any) -> int:
    """Drop a worker's running totals of spans it runs no task of; return how many.

    A worker adds up its task metrics per span for its own Prometheus endpoint and
    keeps them for its lifetime (a few entries per job). Runs on the worker's event
    loop (``Client.run``); what the next heartbeat reports is kept apart, untouched.
    """
    from distributed.spans import CONTEXTS_WITH_SPAN_ID

    active = {task.span_id for task in dask_worker.state.tasks.values()}
    dropped = 0
    for totals in (dask_worker.digests_total, dask_worker.digests_max):
        stale = [
            name
            for name in totals
            if isinstance(name, tuple)
            and len(name) > 1
            and name[0] in CONTEXTS_WITH_SPAN_ID
            and name[1] not in active
        ]
        for name in stale:
            del totals[name]
        dropped += len(stale)
    return dropped


def forget_key_names() -> None:
    """Empty Dask's memo of task key names (up to 100,000 of them, a few hundred bytes
    each): every job's task keys are new, so it would only fill up."""
    from dask.utils import key_split

    key_split.cache_clear()


class ClusterLease:
    """A backend's share of a cluster: :meth:`using` runs a job on it, :meth:`release`
    gives it back."""

    def __init__(self, pool: ClusterPool, settings: DaskSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._released = False

    @contextmanager
    def using(self) -> Iterator[Any]:
        """The ``distributed.Client`` of the shared cluster (started on first use) for one job."""
        if self._released:
            raise DaemonError("this Dask cluster lease was released: build a new backend")
        shared = self._pool._shared(self._settings)
        generation = shared.acquire()
        try:
            yield generation.client
        finally:
            shared.release(generation)

    def tidy(self) -> None:
        """After a job: bound what the cluster remembers of finished work (best effort,
        never raises; cheap when called often)."""
        if not self._released:
            self._pool._shared(self._settings).tidy()

    def release(self) -> None:
        """Give the lease back; the last one closes the cluster. Idempotent."""
        if not self._released:
            self._released = True
            self._pool._release(self._settings)


class ClusterPool:
    """The clusters of this process, by ``[dask]`` settings.

    ``secrets_dir``: a private folder for the certificates a batch-job cluster's
    workers read (the daemon sets it to a folder of its state dir).
    """

    def __init__(self, secrets_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._clusters: dict[DaskSettings, _Shared] = {}
        self.secrets_dir = secrets_dir

    def lease(self, settings: DaskSettings) -> ClusterLease:
        """A share of the cluster of ``settings``; ConfigError if it cannot be built here."""
        check_available(settings)
        with self._lock:
            shared = self._clusters.get(settings)
            if shared is None:
                shared = self._clusters[settings] = _Shared(settings, self.secrets_dir)
            shared.leases += 1
        return ClusterLease(self, settings)

    def _shared(self, settings: DaskSettings) -> _Shared:
        with self._lock:
            return self._clusters[settings]

    def _release(self, settings: DaskSettings) -> None:
        with self._lock:
            shared = self._clusters[settings]
            shared.leases -= 1
            if shared.leases > 0:
                return
            del self._clusters[settings]
        shared.close()


_POOL = ClusterPool()


def cluster_pool() -> ClusterPool:
    """The process-wide pool: one cluster per ``[dask]`` setting for the daemon's lifetime."""
    return _POOL
