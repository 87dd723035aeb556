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
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DaemonError

if TYPE_CHECKING:
    from ..config import DaskSettings

__all__ = ["ClusterLease", "ClusterPool", "check_available", "cluster_pool"]

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


class _Shared:
    """A cluster and its client, started on first use."""

    def __init__(self, settings: DaskSettings) -> None:
        self.settings = settings
        self.users = 0
        self.lock = threading.Lock()
        self.stack: ExitStack | None = None
        self.client: Any = None

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
    if settings.jobqueue is not None and importlib.util.find_spec("dask_jobqueue") is None:
        raise ConfigError(
            f"[dask] jobqueue = {settings.jobqueue!r} needs dask-jobqueue, which is not"
            " installed: pip install dask-jobqueue (or remove [dask] jobqueue)"
        )


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
    if settings.jobqueue is not None:
        return _jobqueue_client(distributed, settings, stack)
    # The scheduler and workers live in the daemon: keep their in-memory history short
    # (by default an hour of monitor samples and profiles, 10,000 log lines each).
    importlib.import_module("dask").config.set(_QUIET_HISTORY)
    options: dict[str, Any] = {"dashboard_address": None}
    for name in ("n_workers", "threads_per_worker", "processes"):
        value = getattr(settings, name)
        if value is not None:
            options[name] = value
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
    jobqueue = importlib.import_module("dask_jobqueue")
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
