"""The Dask clusters Sinagot starts or joins, with comms that nobody else can use.

A Dask scheduler, nanny or worker runs whatever function a connected client
sends it, and loopback is no boundary between the users of one machine. So:

- a LocalCluster of threads talks in-process (``inproc://``): no TCP at all;
- a LocalCluster of processes, and a dask-jobqueue cluster, talk TLS with a
  throwaway certificate (``Security.temporary()``) that only this process holds
  (and hands to its workers: in memory for local processes, as 0600 files in a
  private folder for batch jobs). A peer without it fails the handshake;
- an external scheduler (``[dask] address``) is reached over TLS with the
  lab's certificates, or over plaintext TCP only on loopback or when the config
  says ``allow_plaintext = true`` (checked in :mod:`sinagot.config`).

Every HTTP endpoint of a cluster started here listens on loopback and serves
``/health`` only: the dashboards show logs and call stacks, which are nobody
else's business.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..connectors import take_environment_password
from ..errors import ConfigError, SinagotError

if TYPE_CHECKING:
    from ..config import DaskSettings

__all__ = [
    "HTTP_HEALTH_ONLY",
    "check_available",
    "local_cluster_options",
    "open_client",
]

logger = logging.getLogger(__name__)

# What the HTTP servers of schedulers, nannies and workers started here may serve.
HTTP_HEALTH_ONLY = {
    "distributed.scheduler.http.routes": ["distributed.http.health"],
    "distributed.worker.http.routes": ["distributed.http.health"],
}
_CONNECT_TIMEOUT = 30
# Closing waits for running tasks; a script thread cannot be stopped, so give up after
# this long (the threads are daemon threads: they do not hold the process up).
CLOSE_TIMEOUT = 5.0


def _security() -> Any:
    try:
        return importlib.import_module("distributed").Security.temporary()
    except ImportError as exc:
        # Security.temporary needs `cryptography` (a dependency of ours).
        raise ConfigError(
            f"cannot make the Dask cluster's TLS certificate ({exc}): pip install cryptography"
        ) from exc


def local_cluster_options(settings: DaskSettings) -> dict[str, Any]:
    """``distributed.LocalCluster`` options for ``settings``: comms only this process can use.

    Threads talk in-process; worker processes talk TLS on loopback with a fresh
    certificate. ``Client(cluster)`` picks the certificate up from the cluster.
    """
    options: dict[str, Any] = {
        # Every node has an HTTP server (health only, see HTTP_HEALTH_ONLY): on loopback,
        # else a worker's binds every interface. The scheduler serves no dashboard; a
        # worker's exists only where bokeh is installed.
        "dashboard_address": "127.0.0.1:0",
        "scheduler_kwargs": {"dashboard": False},
        "worker_dashboard_address": "127.0.0.1:0",
    }
    for name in ("n_workers", "threads_per_worker", "processes"):
        value = getattr(settings, name)
        if value is not None:
            options[name] = value
    if options.get("processes", True):
        options.update(host="127.0.0.1", protocol="tls://", security=_security())
    else:
        options["protocol"] = "inproc://"
    return options


def check_available(settings: DaskSettings) -> None:
    """Raise ConfigError now if the cluster ``settings`` ask for cannot be built here."""
    if settings.jobqueue is not None:
        import_jobqueue(settings.jobqueue)


def import_jobqueue(cluster_type: str) -> Any:
    """Import dask_jobqueue, keeping the process's SIGINT handler.

    Importing it installs its own SIGINT handler (which exits the process), which
    only the main thread may do: the daemon imports it while building its backends,
    on the main thread, and puts its own handler back.
    """
    if sys.modules.get("dask_jobqueue") is not None:
        return sys.modules["dask_jobqueue"]
    if threading.current_thread() is not threading.main_thread():
        raise SinagotError("dask-jobqueue must be imported first on the main thread")
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


def open_client(
    settings: DaskSettings, stack: ExitStack, *, secrets_dir: Path | None = None
) -> Any:
    """A ``distributed.Client`` for ``settings``; ``stack`` closes it (and its cluster).

    ``secrets_dir``: where a dask-jobqueue cluster writes its workers' certificate
    when Dask's jobqueue.yaml names no ``shared-temp-directory`` (the batch jobs
    must be able to read it: the daemon passes its state dir); a private temporary
    folder otherwise.
    """
    check_available(settings)
    # Worker processes and batch jobs inherit the environment: not the XNAT password.
    take_environment_password()
    dask = importlib.import_module("dask")
    chosen_level = logging.getLogger("distributed").level
    distributed = importlib.import_module("distributed")
    if chosen_level != logging.NOTSET:
        # Importing distributed sets its loggers' levels from Dask's config (INFO):
        # keep the one the caller chose to silence the cluster's start/stop chatter.
        logging.getLogger("distributed").setLevel(chosen_level)
    if settings.address is not None:
        return _external_client(distributed, settings, stack)
    with dask.config.set(HTTP_HEALTH_ONLY):
        if settings.jobqueue is not None:
            cluster = _jobqueue_cluster(dask, settings, stack, secrets_dir)
        else:
            options = local_cluster_options(settings)
            cluster = distributed.LocalCluster(**options)
            stack.callback(_close, cluster, "the Dask LocalCluster")
            stack.callback(_stop_thread_workers, distributed, cluster)
            logger.info(
                "Dask LocalCluster started: %d worker(s), %s",
                len(cluster.workers),
                "processes over TLS" if options.get("processes", True) else "threads, in-process",
            )
    # Not `with Client(...)`: that binds the client to the starting thread's context,
    # and the daemon may close it from another thread.
    client = distributed.Client(cluster)
    stack.callback(_close, client, "the Dask client")
    return client


def _external_client(distributed: Any, settings: DaskSettings, stack: ExitStack) -> Any:
    address = settings.address
    assert address is not None
    if address.startswith("tls://"):
        if settings.tls_ca_file is not None:
            security = distributed.Security(
                tls_ca_file=str(settings.tls_ca_file),
                tls_client_cert=str(settings.tls_cert),
                tls_client_key=None if settings.tls_key is None else str(settings.tls_key),
                require_encryption=True,
            )
        else:
            # Dask's own configuration: distributed.comm.tls.{ca-file,client.cert,client.key}.
            security = distributed.Security()
            if security.tls_ca_file is None or security.tls_client_cert is None:
                raise ConfigError(
                    f"[dask] address {address} is TLS but no certificate is configured: set"
                    " [dask] tls_ca_file, tls_cert and tls_key (or Dask's"
                    " distributed.comm.tls.ca-file, client.cert and client.key)"
                )
    elif address.startswith("inproc://"):
        security = None
    else:
        security = None
        logger.warning(
            "the Dask scheduler %s is reached without TLS: whoever can connect to it can run"
            " code in its workers; use tls:// with certificates",
            address,
        )
    logger.info("connecting to the Dask scheduler %s", address)
    try:
        client = distributed.Client(address, security=security, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise SinagotError(
            f"cannot reach the Dask scheduler {address}: {exc}; start it or fix [dask] address"
            " (and its TLS settings)"
        ) from exc
    stack.callback(_close, client, "the Dask client")
    return client


def _jobqueue_cluster(
    dask: Any, settings: DaskSettings, stack: ExitStack, secrets_dir: Path | None
) -> Any:
    from ..config import JOBQUEUE_CLUSTERS

    assert settings.jobqueue is not None
    jobqueue = import_jobqueue(settings.jobqueue)
    cluster_class = getattr(jobqueue, JOBQUEUE_CLUSTERS[settings.jobqueue])
    config_name = cluster_class.job_cls.default_config_name()
    shared = dask.config.get(f"jobqueue.{config_name}.shared-temp-directory", None)
    if shared is None:
        if secrets_dir is None:
            secrets_dir = Path(tempfile.mkdtemp(prefix="sinagot-dask-"))
            stack.callback(_remove_tree, secrets_dir)
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        secrets_dir.chmod(0o700)
        shared = str(secrets_dir)
    # Queue, cores, memory, interface, ...: from Dask's jobqueue.yaml. The scheduler
    # serves no dashboard unless jobqueue.yaml's scheduler-options ask for one.
    scheduler_options = {
        "dashboard": False,
        **dask.config.get(f"jobqueue.{config_name}.scheduler-options", {}),
    }
    cluster = cluster_class(
        security=_security(),
        protocol="tls://",
        shared_temp_directory=shared,
        scheduler_options=scheduler_options,
    )
    stack.callback(_close, cluster, f"the dask-jobqueue {settings.jobqueue} cluster")
    jobs = settings.n_workers or 1
    cluster.scale(jobs=jobs)
    logger.info("dask-jobqueue %s started over TLS: %d job(s)", settings.jobqueue, jobs)
    return cluster


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


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
