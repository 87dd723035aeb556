"""The daemon's lifecycle: start-up, the TaskGroup that owns every task, signals, reload, stop.

Task ownership: :meth:`Daemon.run` owns one TaskGroup. In it run the dispatcher
and ``max_concurrent_jobs`` workers (:mod:`._workers`), the watchdog pinger, the
notifications' sender (:mod:`._notify`; cancelled after the drain, then its last
message goes out within a bounded time), the pipeline watcher, one
poller per dataset (:mod:`._polling`; replaced on reload: the daemon cancels and
awaits the old ones) and short reload / backend-closing tasks.

The pipeline of each dataset (its steps' fingerprints, :mod:`._pipelines`) is made
current in the journal at start, at each reload and whenever the watcher finds a
script file that moved: the sessions it changes become stale and are processed
again, after new ones. On stop the daemon
cancels pollers and the dispatcher, gives busy workers ``shutdown_timeout`` to
finish their job, then cancels them; a cancelled job keeps its in-flight state in
the journal and is resumed at the next start.

The daemon's status changes only along :data:`~._states.STATUS_TRANSITIONS`. Jobs
are held by the ``_unpaused`` gate that the dispatcher and workers wait on: a pause
that comes while the daemon starts or reloads holds them at once, and the status
turns to paused when that ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..connectors import PaceView, ServerPaces
from ..errors import ConfigError, DaemonError, SinagotError
from ._attempt import AttemptEnd, JobLogHandler, Outcome
from ._backend import BackendFactory
from ._cluster import cluster_pool
from ._configs import DaemonConfigs, SettingsLoader
from ._datasets import (
    DatasetStatus,
    ServedDataset,
    ServedDatasets,
    build_datasets,
    close_backend,
)
from ._job_records import JobDetail, JobRecord
from ._journal import Journal
from ._metrics import DaemonMetrics
from ._notify import Notifications
from ._one_line import one_line
from ._paths import lock_state_dir, socket_path, state_dir
from ._pipelines import PipelineReport
from ._polling import Poller, ServerGates, poll_phases
from ._states import DaemonStatus, check_status_transition, shown_status
from ._systemd import Notifier
from ._workers import JobWorkers

if TYPE_CHECKING:
    from ..config import DaemonSettings, Settings
    from ._metrics_server import MetricsServer

__all__ = ["Daemon"]

logger = logging.getLogger(__name__)


class Daemon:
    """The sync daemon for one or more dataset configs; run it with :meth:`run`."""

    def __init__(
        self,
        config_paths: Sequence[str | os.PathLike[str]],
        backend_factory: BackendFactory,
        *,
        notifier: Notifier | None = None,
        settings_loader: SettingsLoader | None = None,
        log_level_forced: bool = False,
    ) -> None:
        if not config_paths:
            raise ConfigError(
                "no config file given: pass at least one dataset config to the daemon"
            )
        # Read again at each reload.
        self.config_paths = tuple(Path(p) for p in config_paths)
        self._configs = DaemonConfigs(settings_loader, log_level_forced=log_level_forced)
        self._factory = backend_factory
        self.notifier = notifier or Notifier()
        self.started = time.time()
        self._status = DaemonStatus.STARTING
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._served = ServedDatasets()
        self._journal: Journal | None = None
        self._workers: JobWorkers | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        # Set once the TaskGroup runs: the socket answers earlier, but a reload needs it.
        self._serving = asyncio.Event()
        self._pollers: set[asyncio.Task[None]] = set()
        self._gates = ServerGates()
        # The pace of each server the datasets use (back-pressure), shared by their
        # stores and pollers; kept across reloads, as the servers' health is.
        self.paces = ServerPaces()
        self._reloads: set[asyncio.Task[None]] = set()
        self._announced = False
        self.metrics = DaemonMetrics(self)
        self._metrics_server: MetricsServer | None = None
        self.notifications = Notifications(
            lambda: self._configs.notify,
            lambda: self._served.current,
            page_url=lambda: self.page_url,
        )

    @property
    def settings(self) -> DaemonSettings:
        return self._configs.settings

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise DaemonError("the job journal is not open: the daemon is not running")
        return self._journal

    # -- status --------------------------------------------------------------------

    @property
    def status(self) -> DaemonStatus:
        return self._status

    @property
    def paused(self) -> bool:
        """Whether new jobs are held, whatever the status (a pause outlasts a reload)."""
        return not self._unpaused.is_set()

    @property
    def stopping(self) -> bool:
        return self._status in (DaemonStatus.STOPPING, DaemonStatus.STOPPED)

    def _become(self, status: DaemonStatus) -> None:
        check_status_transition(self._status, status)
        logger.debug("status: %s -> %s", self._status, status)
        self._status = status

    def _settle(self) -> None:
        """Leave starting or reloading: running, or paused if a pause came meanwhile."""
        self._become(DaemonStatus.PAUSED if self.paused else DaemonStatus.RUNNING)

    def status_line(self) -> str:
        shown = shown_status(self.paused, self.stopping)
        down = self._served.down()
        text = f"{shown}: {self.busy_jobs} job(s) running, {len(self._served.current)} dataset(s)"
        return f"{text}, down: {', '.join(down)}" if down else text

    def _notify_status(self) -> None:
        self.notifier.status(self.status_line())

    # -- the main loop -------------------------------------------------------------

    async def run(self, socket_ready: Callable[[Path], None] | None = None) -> None:
        """Serve until SIGTERM / SIGINT / :meth:`request_stop`; clean up on the way out."""
        why = "stop requested"
        try:
            await self._run(socket_ready)
        except BaseException as exc:
            why = f"it failed: {one_line(exc)}"
            raise
        finally:
            if self._announced:
                await self.notifications.aclose(why)
            if not self.stopping:
                self._become(DaemonStatus.STOPPING)
            self._become(DaemonStatus.STOPPED)
        logger.info("stopped")

    async def _run(self, socket_ready: Callable[[Path], None] | None) -> None:
        from ._control import ControlServer
        from ._metrics_server import MetricsServer

        all_settings = await self._configs.read(self.config_paths)
        self._configs.adopt(all_settings)
        self.paces.recovery = self.settings.server_recovery
        state = state_dir(self.settings.state_dir)
        # Before any start-up work, so that a socket with nowhere to live costs nothing to report.
        control_path = socket_path(self.settings.socket)
        lock = lock_state_dir(state)
        # Batch jobs read their Dask certificate there (private to the daemon's user).
        cluster_pool().secrets_dir = state / "dask"
        log_handler = JobLogHandler()
        logging.getLogger().addHandler(log_handler)
        control: ControlServer | None = None
        loop = asyncio.get_running_loop()
        # Installed before start-up work so that a SIGTERM then still means "drain, exit 0".
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        try:
            self._journal = await Journal.open(state / "journal.sqlite3")
            self._workers = JobWorkers(
                self._journal,
                self.settings.max_concurrent_jobs,
                unpaused=self._unpaused,
                wake=self._wake,
                settings=lambda: self.settings,
                datasets=lambda: self._served.current,
                stopping=lambda: self.stopping,
                job_ended=self._job_ended,
                metrics=self.metrics,
                server_wait=self._server_wait,
            )
            self._served.current = await build_datasets(all_settings, self._factory, self.paces)
            control = ControlServer(self, control_path)
            await control.start()
            if self.settings.metrics_address is not None:
                self._metrics_server = MetricsServer(self, *self.settings.metrics_address)
                await self._metrics_server.start()
            if socket_ready is not None:
                socket_ready(control.path)
            resumed = await self.journal.resume_in_flight()
            if resumed:
                logger.info("resuming %d job(s) that were in flight: %s", len(resumed), resumed)
            await self._serve(self._workers)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if control is not None:
                await control.stop()
            if self._metrics_server is not None:
                await self._metrics_server.stop()
            for dataset in self._served.every():
                await close_backend(dataset)
            if self._journal is not None:
                await self._journal.aclose()
            logging.getLogger().removeHandler(log_handler)
            lock.close()
            self.notifier.close()

    async def _serve(self, workers: JobWorkers) -> None:
        # Before the workers claim: jobs the pipeline changed wait stale behind new ones.
        await self._check_pipelines(self._served.current.values())
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._serving.set()
            count = workers.start(tg)
            self._start_pollers()
            pipelines = tg.create_task(self._watch_pipelines(), name="sinagot-pipelines")
            watchdog = None
            if self.notifier.watchdog_interval is not None:
                watchdog = tg.create_task(self._watchdog_loop(self.notifier.watchdog_interval))
            notifying = tg.create_task(self.notifications.run(), name="sinagot-notify")
            self._settle()
            self.notifier.ready(self.status_line())
            # Only a daemon that got this far says it stopped: one that cannot start (and
            # systemd restarts) would otherwise send a message at every try.
            self._announced = True
            self.notifications.started()
            logger.info(
                "ready: %d dataset(s) %s, %d worker(s)",
                len(self._served.current),
                sorted(self._served.current),
                count,
            )
            await self._stop.wait()
            pipelines.cancel()
            await self._drain(workers)
            notifying.cancel()
            if watchdog is not None:
                watchdog.cancel()
        self._tg = None
        self._serving.clear()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            logger.info("stop requested")
        self._stop.set()

    async def _drain(self, workers: JobWorkers) -> None:
        self._become(DaemonStatus.STOPPING)
        self.notifier.stopping()
        timeout = self.settings.shutdown_timeout
        logger.info("stopping: %d running job(s) get %g s to finish", workers.busy_jobs, timeout)
        others = [*self._reloads, *self._pollers]
        for task in others:
            task.cancel()
        await workers.stop(timeout)
        if others:
            await asyncio.wait(others)

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- pipelines -----------------------------------------------------------------

    async def _check_pipelines(self, datasets: Iterable[ServedDataset]) -> None:
        """Make each dataset's pipeline current in the journal if it changed; never raises."""
        stale = 0
        for dataset in list(datasets):
            try:
                current = await dataset.backend.pipeline()
                if dataset.pipeline == current:
                    continue
                report = await self.journal.set_pipeline(dataset.name, current)
            except Exception as exc:
                # A bug in a backend must not take the daemon down: the next check tries again.
                logger.error("%s: cannot check its pipeline: %s", dataset.name, one_line(exc))
                continue
            first = dataset.pipeline is None
            dataset.pipeline, dataset.pipeline_report = current, report
            _log_pipeline(dataset.name, report, changed=not first)
            if report.newly_stale:
                self.notifications.stale(dataset.name, report.sessions, report.steps)
            stale += report.sessions
        if stale:
            self._wake.set()

    async def _watch_pipelines(self) -> None:
        while True:
            await asyncio.sleep(self.settings.pipeline_check_interval)
            await self._check_pipelines(self._served.current.values())

    async def plan(self, names: Sequence[str] | None = None) -> dict[str, PipelineReport]:
        """What each named dataset (all when None) would process again for its pipeline as
        its scripts and config are now on disk (a reload would apply it); changes nothing.
        Raises ConfigError if a config no longer loads."""
        on_disk = {s.config_path: s for s in await self._configs.read(self.config_paths)}
        result: dict[str, PipelineReport] = {}
        for dataset in self._served.current.values():
            settings = on_disk.get(dataset.settings.config_path)
            if settings is not None and (names is None or dataset.name in names):
                current = await dataset.backend.pipeline(settings)
                result[dataset.name] = await self.journal.preview_pipeline(dataset.name, current)
        return result

    def _start_pollers(self) -> None:
        """A poller per current dataset, each at its own phase of the interval."""
        assert self._tg is not None
        datasets = self._served.current
        for name, phase in poll_phases(datasets.values()).items():
            poller = Poller(
                datasets[name],
                self.journal,
                settings=lambda: self.settings,
                wake=self._wake,
                health_changed=self._health_changed,
                phase=phase,
                gates=self._gates,
                paces=self.paces,
            )
            task = self._tg.create_task(poller.run(), name=f"sinagot-poll-{name}")
            datasets[name].poller = task
            self._pollers.add(task)
            task.add_done_callback(self._pollers.discard)

    def _health_changed(self) -> None:
        self._notify_status()
        self.notifications.wake()

    def _job_ended(self, dataset: ServedDataset, job: JobRecord, end: AttemptEnd | None) -> None:
        if dataset.retired and dataset.active_jobs == 0 and self._tg is not None:
            self._tg.create_task(close_backend(dataset))
        if end is not None and end.outcome is Outcome.FAILED:
            self.notifications.job_failed(job.id, dataset.name, job.session, end.error)
        self._notify_status()

    # -- control operations --------------------------------------------------------

    def pause(self) -> None:
        if not self.paused:
            logger.info("paused: no new job starts until resume")
        self._unpaused.clear()
        if self._status is DaemonStatus.RUNNING:
            self._become(DaemonStatus.PAUSED)
        self._notify_status()

    def resume(self) -> None:
        if self.paused:
            logger.info("resumed")
        self._unpaused.set()
        if self._status is DaemonStatus.PAUSED:
            self._become(DaemonStatus.RUNNING)
        self._wake.set()
        self._notify_status()

    def poll_now(self, names: Sequence[str] | None = None) -> list[str]:
        return self._served.poll_now(names)

    async def retry(self, job_id: int, who: str) -> JobRecord | None:
        job = await self.journal.retry(job_id, who)
        if job is not None:
            logger.info("job %d: retry requested by %s", job_id, who)
            self._wake.set()
        return job

    async def job_detail(self, job_id: int) -> tuple[JobDetail, tuple[str, ...]] | None:
        """A job from the journal, with its live log tail while it runs."""
        detail = await self.journal.job(job_id)
        if detail is None:
            return None
        live = None if self._workers is None else self._workers.live_log(job_id)
        return detail, (detail.log_tail if live is None else live)

    async def dataset_statuses(self) -> list[DatasetStatus]:
        journal = self.journal
        return self._served.statuses(await journal.counts(), await journal.stale_reports())

    @property
    def busy_jobs(self) -> int:
        return 0 if self._workers is None else self._workers.busy_jobs

    @property
    def queued_jobs(self) -> int:
        return 0 if self._workers is None else self._workers.queued_jobs

    @property
    def completed(self) -> Mapping[tuple[str, Outcome], int]:
        """Job attempts that ended since the start, by dataset and outcome."""
        return {} if self._workers is None else self._workers.completed

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes the metrics over TCP (None: ``metrics_address`` unset)."""
        return None if self._metrics_server is None else self._metrics_server.url

    @property
    def page_url(self) -> str | None:
        """The status page, on the metrics listener (None: ``metrics_address`` unset)."""
        return None if self._metrics_server is None else self._metrics_server.page_url

    def dataset_settings(self) -> list[Settings]:
        """The configs of the datasets served now."""
        return [dataset.settings for dataset in self._served.current.values()]

    def dataset_settings_of(self, name: str) -> Settings | None:
        """The config of dataset ``name`` served now, if any."""
        dataset = self._served.current.get(name)
        return None if dataset is None else dataset.settings

    def datasets_polls(self) -> dict[str, dict[str, int]]:
        return self._served.polls()

    def dataset_names(self) -> list[str]:
        return list(self._served.current)

    def _server_wait(self, dataset: ServedDataset) -> float | None:
        """How long a job of ``dataset`` waits after a failed attempt while its server is
        slowed (then the attempt does not count); None when the server is well."""
        pace = self.paces.get(dataset.server)
        if pace is None or pace.level == 0:
            return None
        settings = self.settings
        return max(
            pace.hold_left(), settings.retry_backoff, settings.poll_interval * pace.poll_factor()
        )

    def server_paces(self) -> list[PaceView]:
        return self.paces.views()

    # -- reload --------------------------------------------------------------------

    def _reload_from_signal(self) -> None:
        if self._tg is not None and not self.stopping:
            task = self._tg.create_task(self._reload_logged("SIGHUP"))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _reload_logged(self, why: str) -> None:
        with contextlib.suppress(SinagotError):
            await self.reload(why)

    async def reload(self, why: str) -> list[str]:
        """Re-read every config; an invalid one is logged and raised, the old ones kept."""
        await self._serving.wait()
        async with self._reload_lock:
            if self.stopping:
                raise DaemonError("the daemon is stopping: reload refused")
            self._become(DaemonStatus.RELOADING)
            self.notifier.reloading()
            logger.info("reloading the configs (%s)", why)
            try:
                all_settings = await self._configs.read(self.config_paths)
                datasets = await build_datasets(all_settings, self._factory, self.paces)
            except SinagotError as exc:
                logger.error("reload rejected, keeping the running config: %s", one_line(exc))
                self._reloaded()
                raise
            except Exception as exc:
                # A bug in a backend factory must not take the running daemon down.
                logger.error("reload failed, keeping the running config: %s", one_line(exc))
                self._reloaded()
                raise DaemonError(
                    f"reload failed: {one_line(exc)}; the running config is kept"
                ) from exc
            if self.stopping:
                # SIGTERM came while the configs were being read: starting new pollers
                # now would outlive the drain.
                for dataset in datasets.values():
                    await close_backend(dataset)
                raise DaemonError("the daemon is stopping: reload abandoned")
            self._configs.adopt(all_settings)
            self.paces.recovery = self.settings.server_recovery
            self._swap(datasets)
            await self._check_pipelines(datasets.values())
            self._reloaded()
            logger.info("reloaded: %d dataset(s) %s", len(datasets), sorted(datasets))
            return sorted(datasets)

    def _reloaded(self) -> None:
        # A stop that came meanwhile has taken over: the daemon is no longer ready.
        if self._status is DaemonStatus.RELOADING:
            self._settle()
            self.notifier.ready(self.status_line())

    def _swap(self, datasets: dict[str, ServedDataset]) -> None:
        assert self._tg is not None
        for idle in self._served.replace(datasets):
            self._tg.create_task(close_backend(idle))
        self._start_pollers()
        self._wake.set()


def _log_pipeline(name: str, report: PipelineReport, *, changed: bool) -> None:
    if report.sessions:
        logger.info(
            "%s: %s: %d session(s) to process again, for %s",
            name,
            "the pipeline changed" if changed else "pipeline checked",
            report.sessions,
            ", ".join(f"{unit} ({count})" for unit, count in report.steps.items()),
        )
    elif changed:
        logger.info("%s: the pipeline changed, no session to process again", name)
    for unit, count in report.removed.items():
        logger.info(
            "%s: %s is no longer in the pipeline: its derivatives stay on %d session(s)",
            name,
            unit,
            count,
        )
