"""One Dask cluster per ``[dask]`` setting for the whole daemon process, shared by its datasets.

Backends take a :class:`ClusterLease` when they are built and give it back when
closed, so a reload (new backends built before the old ones close) keeps the
running cluster; the last lease given back closes it. The cluster starts on
first use, not at start-up, so a daemon with nothing to do starts no workers.
Every method blocks: call them from a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import signal
import sys
import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from .._engine import local_cluster_options
from ..errors import ConfigError, DaemonError

if TYPE_CHECKING:
    from ..config import DaskSettings

__all__ = [
    "ClusterLease",
    "ClusterPool",
    "check_available",
    "cluster_pool",
    "forget_finished_spans",
    "forget_key_names",
    "forget_span_metrics",
]

logger = logging.getLogger(__name__)

# Closing waits for running tasks; a script thread cannot be stopped, so give up after
# this long (the threads are daemon threads: they do not hold the process up).
CLOSE_TIMEOUT = 5.0
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


class _Shared:
    """A cluster and its client, started on first use."""

    def __init__(self, settings: DaskSettings) -> None:
        self.settings = settings
        self.users = 0
        self.lock = threading.Lock()
        self.stack: ExitStack | None = None
        self.client: Any = None
        self.last_tidy = time.monotonic()

    def tidy(self) -> None:
        """Make the cluster forget finished work, if it is the daemon's own."""
        with self.lock:
            client = self.client
            now = time.monotonic()
            if client is None or self.settings.address is not None:
                return
            if now - self.last_tidy < TIDY_INTERVAL:
                return
            self.last_tidy = now
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

    def start(self) -> Any:
        with self.lock:
            if self.client is None:
                self.stack = ExitStack()
                try:
                    self.client = _connect(self.settings, self.stack)
                except BaseException:
                    self.stack.close()
                    self.stack = None
                    raise
            return self.client

    def close(self) -> None:
        with self.lock:
            stack, self.stack, self.client = self.stack, None, None
        if stack is not None:
            stack.close()
            logger.info("Dask cluster closed")


def check_available(settings: DaskSettings) -> None:
    """Raise ConfigError now if the cluster ``settings`` ask for cannot be built here."""
    if importlib.util.find_spec("distributed") is None:
        raise ConfigError(
            "the daemon runs scripts on Dask but distributed is not installed:"
            " pip install 'dask[distributed]'"
        )
    if settings.jobqueue is not None:
        _import_jobqueue(settings.jobqueue)


def _import_jobqueue(cluster_type: str) -> Any:
    """Import dask_jobqueue, keeping the process's SIGINT handler.

    Importing it installs its own SIGINT handler (which exits the process), which
    only the main thread may do: the daemon imports it while building its backends,
    on the main thread, and puts its own handler back.
    """
    if sys.modules.get("dask_jobqueue") is not None:
        return sys.modules["dask_jobqueue"]
    if threading.current_thread() is not threading.main_thread():
        raise DaemonError("dask-jobqueue must be imported first on the main thread")
    previous = signal.getsignal(signal.SIGINT)
    try:
        return importlib.import_module("dask_jobqueue")
    except ImportError as exc:
        raise ConfigError(
            f"[dask] jobqueue = {cluster_type!r} needs dask-jobqueue, which is not"
            " installed: pip install dask-jobqueue (or remove [dask] jobqueue)"
        ) from exc
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _connect(settings: DaskSettings, stack: ExitStack) -> Any:
    check_available(settings)
    distributed = importlib.import_module("distributed")
    if not logger.isEnabledFor(logging.DEBUG):
        # The cluster's start/stop chatter would drown the daemon's one-line events.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if settings.address is not None:
        logger.info("connecting to the Dask scheduler %s", settings.address)
        try:
            client = distributed.Client(settings.address, timeout=30)
        except OSError as exc:
            raise DaemonError(
                f"cannot reach the Dask scheduler {settings.address}: {exc};"
                " start it or fix [dask] address"
            ) from exc
        stack.callback(_close, client, "the Dask client")
        return client
    # The scheduler (and a LocalCluster's workers) live in the daemon: keep their
    # in-memory history short (by default an hour of monitor samples and profiles,
    # 10,000 log lines each).
    importlib.import_module("dask").config.set(_QUIET_HISTORY)
    if settings.jobqueue is not None:
        return _jobqueue_client(distributed, settings, stack)
    options = local_cluster_options(settings)
    cluster = distributed.LocalCluster(**options)
    stack.callback(_close, cluster, "the Dask LocalCluster")
    stack.callback(_stop_thread_workers, distributed, cluster)
    logger.info("Dask LocalCluster started: %s", options)
    # Not `with Client(...)`: that binds the client to the starting thread's context,
    # and the last lease may be given back from another thread.
    client = distributed.Client(cluster)
    stack.callback(_close, client, "the Dask client")
    return client


def _jobqueue_client(distributed: Any, settings: DaskSettings, stack: ExitStack) -> Any:
    from ..config import JOBQUEUE_CLUSTERS

    assert settings.jobqueue is not None
    jobqueue = _import_jobqueue(settings.jobqueue)
    # Queue, cores, memory, ...: dask-jobqueue reads them from Dask's jobqueue.yaml.
    cluster = getattr(jobqueue, JOBQUEUE_CLUSTERS[settings.jobqueue])()
    stack.callback(_close, cluster, f"the dask-jobqueue {settings.jobqueue} cluster")
    cluster.scale(jobs=settings.n_workers or 1)
    logger.info("dask-jobqueue %s started: %d job(s)", settings.jobqueue, settings.n_workers or 1)
    client = distributed.Client(cluster)
    stack.callback(_close, client, "the Dask client")
    return client


def _stop_thread_workers(distributed: Any, cluster: Any) -> None:
    """Close in-process workers without joining their threads (a script may still run).

    Otherwise closing waits for the script, and so does the interpreter's exit.
    """
    for worker in list(cluster.workers.values()):
        if isinstance(worker, distributed.Worker):
            try:
                cluster.sync(worker.close, executor_wait=False, timeout=CLOSE_TIMEOUT)
            except (TimeoutError, OSError) as exc:
                logger.warning("a Dask worker did not stop cleanly: %s", type(exc).__name__)


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


def _close(closable: Any, what: str) -> None:
    try:
        closable.close(timeout=CLOSE_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        logger.warning(
            "%s did not close within %g s (%s): left behind, a script may still be running",
            what,
            CLOSE_TIMEOUT,
            type(exc).__name__,
        )


class ClusterLease:
    """A backend's share of a cluster: :meth:`client` starts it, :meth:`release` gives it back."""

    def __init__(self, pool: ClusterPool, settings: DaskSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._released = False

    def client(self) -> Any:
        """The ``distributed.Client`` of the shared cluster (started on the first call)."""
        if self._released:
            raise DaemonError("this Dask cluster lease was released: build a new backend")
        return self._pool._shared(self._settings).start()

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
    """The clusters of this process, by ``[dask]`` settings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clusters: dict[DaskSettings, _Shared] = {}

    def lease(self, settings: DaskSettings) -> ClusterLease:
        """A share of the cluster of ``settings``; ConfigError if it cannot be built here."""
        check_available(settings)
        with self._lock:
            shared = self._clusters.get(settings)
            if shared is None:
                shared = self._clusters[settings] = _Shared(settings)
            shared.users += 1
        return ClusterLease(self, settings)

    def _shared(self, settings: DaskSettings) -> _Shared:
        with self._lock:
            return self._clusters[settings]

    def _release(self, settings: DaskSettings) -> None:
        with self._lock:
            shared = self._clusters[settings]
            shared.users -= 1
            if shared.users > 0:
                return
            del self._clusters[settings]
        shared.close()


_POOL = ClusterPool()


def cluster_pool() -> ClusterPool:
    """The process-wide pool: one cluster per ``[dask]`` setting for the daemon's lifetime."""
    return _POOL
