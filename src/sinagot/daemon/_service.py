"""The service loop: pollers per dataset, a dispatcher, a bounded queue and workers.

Task ownership: :meth:`Daemon.run` owns one TaskGroup. In it run the dispatcher,
``max_concurrent_jobs`` workers, the watchdog pinger, one poller per dataset
(replaced on reload: the daemon cancels and awaits the old ones) and short
reload / backend-closing tasks. On stop the daemon cancels pollers and the
dispatcher, gives busy workers ``shutdown_timeout`` to finish their job, then
cancels them; a cancelled job keeps its in-flight state in the journal and is
resumed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import fcntl
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError, DaemonError, SinagotError
from ._backend import BackendFactory, DatasetBackend, Phase, ProcessResult
from ._cluster import cluster_pool
from ._journal import IN_FLIGHT, JobDetail, JobRecord, JobState, Journal
from ._paths import socket_path, state_dir
from ._systemd import Notifier

if TYPE_CHECKING:
    from ..config import DaemonSettings, Settings

__all__ = ["Daemon", "DatasetStatus", "SettingsLoader"]

logger = logging.getLogger(__name__)

SettingsLoader = Callable[[Path], "Settings"]

LOG_TAIL_LINES = 50
BACKOFF_CAP = 600.0
MIN_LIST_TIMEOUT = 30.0


@dataclass(slots=True)
class _JobLog:
    job_id: int
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))


# Set in the task that runs a job (and inherited by everything it spawns), so that
# log records of the backend land in that job's log tail.
_current_job: contextvars.ContextVar[_JobLog | None] = contextvars.ContextVar(
    "sinagot_current_job", default=None
)


class _JobLogHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        job_log = _current_job.get()
        if job_log is not None:
            job_log.lines.append(self.format(record).replace("\n", " | "))


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    name: str
    config: str
    health: str
    last_poll: float | None
    next_poll: float | None
    failures: int
    last_error: str | None
    sessions: int
    jobs: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "health": self.health,
            "last_poll": self.last_poll,
            "next_poll": self.next_poll,
            "failures": self.failures,
            "last_error": self.last_error,
            "sessions": self.sessions,
            "jobs": self.jobs,
        }


class _Dataset:
    """A configured dataset while the daemon serves it (replaced as a whole on reload)."""

    __slots__ = (
        "active_jobs",
        "backend",
        "closed",
        "failures",
        "health",
        "ignored",
        "known",
        "last_error",
        "last_poll",
        "name",
        "next_poll",
        "poll_now",
        "poller",
        "polls",
        "retired",
        "settings",
    )

    def __init__(self, settings: Settings, backend: DatasetBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.name = backend.name
        self.poll_now = asyncio.Event()
        self.poller: asyncio.Task[None] | None = None
        self.health = "unknown"
        self.failures = 0
        self.last_error: str | None = None
        self.last_poll: float | None = None
        self.next_poll: float | None = None
        self.known: dict[str, str] | None = None
        self.ignored: set[str] = set()
        self.polls: dict[str, int] = {"ok": 0, "error": 0}
        self.active_jobs = 0
        self.retired = False
        self.closed = False

    def carry_over(self, old: _Dataset) -> None:
        """Keep what the status shows across a reload of the same dataset."""
        self.health, self.failures, self.last_error = old.health, old.failures, old.last_error
        self.last_poll, self.polls = old.last_poll, old.polls
        old_pattern, new_pattern = old.settings.id_pattern, self.settings.id_pattern
        if (old_pattern.pattern, old_pattern.flags) == (new_pattern.pattern, new_pattern.flags):
            self.ignored = old.ignored


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, SinagotError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_settings(path: Path) -> Settings:
    from ..config import load_settings

    return load_settings(path)


class Daemon:
    """The sync daemon for one or more dataset configs; run it with :meth:`run`."""

    def __init__(
        self,
        config_paths: Sequence[str | os.PathLike[str]],
        backend_factory: BackendFactory,
        *,
        notifier: Notifier | None = None,
        settings_loader: SettingsLoader = _load_settings,
        log_level_forced: bool = False,
    ) -> None:
        if not config_paths:
            raise ConfigError(
                "no config file given: pass at least one dataset config to the daemon"
            )
        self.config_paths = tuple(Path(p) for p in config_paths)
        self._factory = backend_factory
        self._loader = settings_loader
        self._log_level_forced = log_level_forced
        self.notifier = notifier or Notifier()
        self.started = time.time()
        self.paused = False
        self.stopping = False
        self._datasets: dict[str, _Dataset] = {}
        self._retired: list[_Dataset] = []
        self._journal: Journal | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._wake = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        # Set once the TaskGroup runs: the socket answers earlier, but a reload needs it.
        self._serving = asyncio.Event()
        self._claimed: set[int] = set()
        self._busy: dict[asyncio.Task[None], int] = {}
        self._live_logs: dict[int, _JobLog] = {}
        self._queue: asyncio.Queue[JobRecord] | None = None
        self._pollers: set[asyncio.Task[None]] = set()
        self._reloads: set[asyncio.Task[None]] = set()
        self.completed: dict[tuple[str, str], int] = {}
        self._settings: DaemonSettings | None = None

    # -- configuration -----------------------------------------------------------

    @property
    def settings(self) -> DaemonSettings:
        if self._settings is None:
            raise DaemonError("the daemon has no settings yet: call run() first")
        return self._settings

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise DaemonError("the job journal is not open: the daemon is not running")
        return self._journal

    def _load_all(self) -> list[Settings]:
        return [self._loader(path) for path in self.config_paths]

    async def _build(self, all_settings: Sequence[Settings]) -> dict[str, _Dataset]:
        datasets: dict[str, _Dataset] = {}
        try:
            for settings in all_settings:
                backend = self._factory(settings)
                dataset = _Dataset(settings, backend)
                if dataset.name in datasets:
                    await backend.aclose()
                    raise ConfigError(
                        f"dataset name {dataset.name!r} of {settings.config_path} is already used by "
                        f"{datasets[dataset.name].settings.config_path}: give each dataset its own name"
                    )
                datasets[dataset.name] = dataset
        except BaseException:
            for dataset in datasets.values():
                await dataset.backend.aclose()
            raise
        return datasets

    # -- the main loop -------------------------------------------------------------

    async def run(self, socket_ready: Callable[[Path], None] | None = None) -> None:
        """Serve until SIGTERM / SIGINT / :meth:`request_stop`; clean up on the way out."""
        from ._control import ControlServer

        all_settings = await asyncio.to_thread(self._load_all)
        self._settings = all_settings[0].daemon
        if not self._log_level_forced:
            logging.getLogger().setLevel(all_settings[0].log_level)
        state = state_dir(self.settings.state_dir)
        # Before any start-up work, so that a socket with nowhere to live costs nothing to report.
        control_path = socket_path(self.settings.socket)
        lock = _lock_state_dir(state)
        # Batch jobs read their Dask certificate there (private to the daemon's user).
        cluster_pool().secrets_dir = state / "dask"
        log_handler = _JobLogHandler()
        logging.getLogger().addHandler(log_handler)
        control: ControlServer | None = None
        loop = asyncio.get_running_loop()
        # Installed before start-up work so that a SIGTERM then still means "drain, exit 0".
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        try:
            self._journal = await Journal.open(state / "journal.sqlite3")
            self._datasets = await self._build(all_settings)
            control = ControlServer(self, control_path)
            await control.start()
            if socket_ready is not None:
                socket_ready(control.path)
            resumed = await self.journal.resume_in_flight()
            if resumed:
                logger.info("resuming %d job(s) that were in flight: %s", len(resumed), resumed)
            await self._serve()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if control is not None:
                await control.stop()
            for dataset in [*self._datasets.values(), *self._retired]:
                await self._close_backend(dataset)
            if self._journal is not None:
                await self._journal.aclose()
            logging.getLogger().removeHandler(log_handler)
            lock.close()
            self.notifier.close()
        logger.info("stopped")

    async def _serve(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.max_concurrent_jobs)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._serving.set()
            dispatcher = tg.create_task(self._dispatch_loop(), name="sinagot-dispatcher")
            workers = [
                tg.create_task(self._worker_loop(), name=f"sinagot-worker-{n}")
                for n in range(self.settings.max_concurrent_jobs)
            ]
            for dataset in self._datasets.values():
                self._start_poller(dataset)
            watchdog = None
            if self.notifier.watchdog_interval is not None:
                watchdog = tg.create_task(self._watchdog_loop(self.notifier.watchdog_interval))
            self.notifier.ready(self.status_line())
            logger.info(
                "ready: %d dataset(s) %s, %d worker(s)",
                len(self._datasets),
                sorted(self._datasets),
                len(workers),
            )
            await self._stop.wait()
            await self._drain(dispatcher, workers)
            if watchdog is not None:
                watchdog.cancel()
        self._tg = None
        self._serving.clear()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            logger.info("stop requested")
        self._stop.set()

    async def _drain(
        self, dispatcher: asyncio.Task[None], workers: list[asyncio.Task[None]]
    ) -> None:
        self.stopping = True
        self.notifier.stopping()
        timeout = self.settings.shutdown_timeout
        busy = [task for task in workers if task in self._busy]
        logger.info("stopping: %d running job(s) get %g s to finish", len(busy), timeout)
        dispatcher.cancel()
        for task in [*self._reloads, *self._pollers]:
            task.cancel()
        for task in workers:
            if task not in self._busy:
                task.cancel()
        if busy:
            _, pending = await asyncio.wait(busy, timeout=timeout)
            for task in pending:
                logger.warning(
                    "job %d did not finish within %g s: cancelled, it resumes at the next start",
                    self._busy.get(task, -1),
                    timeout,
                )
                task.cancel()
        await asyncio.wait([dispatcher, *workers, *self._pollers, *self._reloads])

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def status_line(self) -> str:
        state = "paused" if self.paused else "stopping" if self.stopping else "running"
        down = [d.name for d in self._datasets.values() if d.health == "down"]
        text = f"{state}: {len(self._busy)} job(s) running, {len(self._datasets)} dataset(s)"
        return f"{text}, down: {', '.join(sorted(down))}" if down else text

    # -- polling -----------------------------------------------------------------

    def _start_poller(self, dataset: _Dataset) -> None:
        assert self._tg is not None
        task = self._tg.create_task(self._poll_loop(dataset), name=f"sinagot-poll-{dataset.name}")
        dataset.poller = task
        self._pollers.add(task)
        task.add_done_callback(self._pollers.discard)

    def _poll_delay(self, dataset: _Dataset) -> float:
        interval = self.settings.poll_interval
        if dataset.failures == 0:
            return interval
        cap = max(interval, min(BACKOFF_CAP, 32 * interval))
        return float(min(interval * 2 ** (dataset.failures - 1), cap))

    async def _poll_loop(self, dataset: _Dataset) -> None:
        while True:
            dataset.poll_now.clear()
            await self._poll_once(dataset)
            delay = self._poll_delay(dataset)
            dataset.next_poll = time.time() + delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await dataset.poll_now.wait()

    async def _poll_once(self, dataset: _Dataset) -> None:
        list_timeout = max(MIN_LIST_TIMEOUT, self.settings.poll_interval)
        try:
            async with asyncio.timeout(list_timeout):
                listing = await dataset.backend.list_sessions()
        except TimeoutError:
            self._poll_failed(dataset, f"listing timed out after {list_timeout:g} s")
            return
        except Exception as exc:
            self._poll_failed(dataset, _one_line(exc))
            return
        dataset.last_poll = time.time()
        dataset.polls["ok"] += 1
        if dataset.health == "down":
            logger.info(
                "%s: the server answers again after %d failure(s)", dataset.name, dataset.failures
            )
        dataset.health, dataset.failures, dataset.last_error = "ok", 0, None
        if dataset.known is None:
            dataset.known = await self.journal.known_sessions(dataset.name)
        known = dataset.known
        pattern = dataset.settings.id_pattern
        changes: list[tuple[str, str]] = []
        for session in listing:
            seen = known.get(session.label)
            if seen is None:
                if session.label in dataset.ignored:
                    continue
                if not pattern.fullmatch(session.label):
                    dataset.ignored.add(session.label)
                    logger.info(
                        "%s: ignoring session %r, it does not match id_pattern %r",
                        dataset.name,
                        session.label,
                        pattern.pattern,
                    )
                    continue
            if seen != session.last_modified:
                changes.append((session.label, session.last_modified))
        if not changes:
            return
        before = {label: known.get(label) for label, _ in changes}
        runnable = await self.journal.apply_listing(dataset.name, changes)
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

    def _poll_failed(self, dataset: _Dataset, error: str) -> None:
        dataset.polls["error"] += 1
        dataset.failures += 1
        dataset.health = "down"
        dataset.last_error = error
        logger.warning(
            "%s: listing failed (%d in a row), next try in %g s: %s",
            dataset.name,
            dataset.failures,
            self._poll_delay(dataset),
            error,
        )
        self.notifier.status(self.status_line())

    def poll_now(self, names: Sequence[str] | None = None) -> list[str]:
        chosen = [d for d in self._datasets.values() if names is None or d.name in names]
        for dataset in chosen:
            dataset.poll_now.set()
        return [d.name for d in chosen]

    # -- dispatching and running -------------------------------------------------

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            await self._resumed.wait()
            self._wake.clear()
            names = [d.name for d in self._datasets.values()]
            jobs = await self.journal.claimable(
                names, sorted(self._claimed), queue.maxsize - queue.qsize()
            )
            for job in jobs:
                self._claimed.add(job.id)
                await queue.put(job)
            if jobs:
                continue
            due = await self.journal.next_due(names)
            delay = None if due is None else max(due - time.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _worker_loop(self) -> None:
        assert self._queue is not None
        me = asyncio.current_task()
        assert me is not None
        while not self.stopping:
            job = await self._queue.get()
            try:
                await self._resumed.wait()
                dataset = self._datasets.get(job.dataset)
                if self.stopping or dataset is None:
                    continue
                self._busy[me] = job.id
                try:
                    await self._run_job(dataset, job.id)
                finally:
                    del self._busy[me]
            finally:
                self._claimed.discard(job.id)
                self._wake.set()

    async def _run_job(self, dataset: _Dataset, job_id: int) -> None:
        job_log = _JobLog(job_id)
        token = _current_job.set(job_log)
        self._live_logs[job_id] = job_log
        dataset.active_jobs += 1
        try:
            await self._attempt(dataset, job_id, job_log)
        finally:
            dataset.active_jobs -= 1
            del self._live_logs[job_id]
            _current_job.reset(token)
            if dataset.retired and dataset.active_jobs == 0 and self._tg is not None:
                self._tg.create_task(self._close_backend(dataset))
            self.notifier.status(self.status_line())

    async def _attempt(self, dataset: _Dataset, job_id: int, job_log: _JobLog) -> None:
        journal = self.journal
        job = await journal.begin(job_id, self.settings.max_attempts)
        where = f"job {job_id} ({dataset.name}/{job.session})"
        if job.state == JobState.FAILED:
            logger.error("%s: %s", where, job.last_error)
            self._count(dataset.name, "failed")
            return
        resumed = job.state in IN_FLIGHT
        logger.info("%s: %s attempt %d", where, "resuming" if resumed else "starting", job.attempts)

        async def enter_phase(phase: Phase) -> None:
            await journal.enter(job_id, JobState(phase.value))
            logger.info("%s: %s", where, phase)

        timeout = self.settings.job_timeout
        error: str | None = None
        result: ProcessResult | None = None
        try:
            async with asyncio.timeout(timeout):
                result = await dataset.backend.process_session(job.session, enter_phase)
        except TimeoutError:
            error = f"timed out after {timeout:g} s ([daemon] job_timeout)"
        except asyncio.CancelledError:
            if self.stopping:
                # Interrupted on purpose: it resumes at the next start without losing a try.
                await journal.give_back_attempt(job_id, "interrupted by a daemon stop")
            raise
        except SinagotError as exc:
            error = _one_line(exc)
        except Exception as exc:
            logger.debug("%s: unexpected error", where, exc_info=True)
            error = _one_line(exc)
        if result is not None and not result.ok:
            error = result.errors[0] if result.errors else f"{result.failed} script(s) failed"
            error = f"{error} ({result.summary()})"
        if error is None and result is not None:
            logger.info("%s: done, %s", where, result.summary())
            settled = result.settled_last_modified
            state = await journal.finish(
                job_id, job.last_modified, result.summary(), tuple(job_log.lines), settled
            )
            if settled is not None:
                self._learn(dataset.name, job.session, settled)
            self._count(dataset.name, "done" if state == JobState.DONE else "changed")
            return
        logger.warning("%s: attempt %d failed: %s", where, job.attempts, error)
        failed = await journal.fail(
            job_id,
            error or "no result",
            max_attempts=self.settings.max_attempts,
            retry_backoff=self.settings.retry_backoff,
            log_tail=tuple(job_log.lines),
        )
        if failed.state == JobState.FAILED:
            logger.error(
                "%s: failed after %d attempt(s); fix it, then run `sinagot retry %d`",
                where,
                failed.attempts,
                job_id,
            )
            self._count(dataset.name, "failed")
        else:
            self._count(dataset.name, "retry")
            self._wake.set()

    def _learn(self, name: str, session: str, stamp: str) -> None:
        """Take ``stamp`` as the last listing of ``session``: only a later change is new.

        Set on the dataset serving ``name`` now (it may have been reloaded since the
        job started), if it has read its listing from the journal yet.
        """
        dataset = self._datasets.get(name)
        if dataset is not None and dataset.known is not None:
            dataset.known[session] = stamp

    def _count(self, dataset: str, outcome: str) -> None:
        key = (dataset, outcome)
        self.completed[key] = self.completed.get(key, 0) + 1

    async def _close_backend(self, dataset: _Dataset) -> None:
        if dataset.closed:
            return
        dataset.closed = True
        try:
            await dataset.backend.aclose()
        except Exception as exc:
            logger.warning("%s: closing the backend failed: %s", dataset.name, _one_line(exc))

    # -- control operations --------------------------------------------------------

    def pause(self) -> None:
        if not self.paused:
            logger.info("paused: no new job starts until resume")
        self.paused = True
        self._resumed.clear()
        self.notifier.status(self.status_line())

    def resume(self) -> None:
        if self.paused:
            logger.info("resumed")
        self.paused = False
        self._resumed.set()
        self._wake.set()
        self.notifier.status(self.status_line())

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
        live = self._live_logs.get(job_id)
        return detail, (tuple(live.lines) if live is not None else detail.log_tail)

    async def dataset_statuses(self) -> list[DatasetStatus]:
        counts = await self.journal.counts()
        result = []
        for dataset in self._datasets.values():
            jobs = {str(state): 0 for state in JobState}
            jobs.update(counts.get(dataset.name, {}))
            result.append(
                DatasetStatus(
                    name=dataset.name,
                    config=str(dataset.settings.config_path),
                    health=dataset.health,
                    last_poll=dataset.last_poll,
                    next_poll=dataset.next_poll,
                    failures=dataset.failures,
                    last_error=dataset.last_error,
                    sessions=len(dataset.known or ()),
                    jobs=jobs,
                )
            )
        return result

    @property
    def busy_jobs(self) -> int:
        return len(self._busy)

    @property
    def queued_jobs(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def datasets_polls(self) -> dict[str, dict[str, int]]:
        return {name: dict(d.polls) for name, d in self._datasets.items()}

    def dataset_names(self) -> list[str]:
        return list(self._datasets)

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
            self.notifier.reloading()
            logger.info("reloading the configs (%s)", why)
            try:
                all_settings = await asyncio.to_thread(self._load_all)
                datasets = await self._build(all_settings)
            except SinagotError as exc:
                logger.error("reload rejected, keeping the running config: %s", _one_line(exc))
                self.notifier.ready(self.status_line())
                raise
            except Exception as exc:
                # A bug in a backend factory must not take the running daemon down.
                logger.error("reload failed, keeping the running config: %s", _one_line(exc))
                self.notifier.ready(self.status_line())
                raise DaemonError(
                    f"reload failed: {_one_line(exc)}; the running config is kept"
                ) from exc
            if self.stopping:
                # SIGTERM came while the configs were being read: starting new pollers
                # now would outlive the drain.
                for dataset in datasets.values():
                    await self._close_backend(dataset)
                raise DaemonError("the daemon is stopping: reload abandoned")
            self._swap(all_settings[0].daemon, all_settings[0].log_level, datasets)
            self.notifier.ready(self.status_line())
            logger.info("reloaded: %d dataset(s) %s", len(datasets), sorted(datasets))
            return sorted(datasets)

    def _swap(self, new: DaemonSettings, log_level: str, datasets: dict[str, _Dataset]) -> None:
        old = self.settings
        for attr in ("socket", "state_dir", "max_concurrent_jobs"):
            if getattr(old, attr) != getattr(new, attr):
                logger.warning("[daemon] %s changed: it takes effect at the next restart", attr)
        self._settings = _with_fixed(new, old)
        if not self._log_level_forced:
            logging.getLogger().setLevel(log_level)
        for dataset in self._datasets.values():
            if dataset.poller is not None:
                dataset.poller.cancel()
            dataset.retired = True
            replacement = datasets.get(dataset.name)
            if replacement is not None:
                replacement.carry_over(dataset)
            if dataset.active_jobs == 0:
                assert self._tg is not None
                self._tg.create_task(self._close_backend(dataset))
            else:
                self._retired.append(dataset)
        self._datasets = datasets
        for dataset in datasets.values():
            self._start_poller(dataset)
        self._wake.set()


def _with_fixed(new: DaemonSettings, old: DaemonSettings) -> DaemonSettings:
    """The new daemon settings, except those that only a restart can change."""
    return dataclasses.replace(
        new, socket=old.socket, state_dir=old.state_dir, max_concurrent_jobs=old.max_concurrent_jobs
    )


class _StateLock:
    def __init__(self, handle: TextIO) -> None:
        self._handle = handle

    def close(self) -> None:
        self._handle.close()


def _lock_state_dir(path: Path) -> _StateLock:
    """Hold an exclusive lock on the state dir: two daemons must never share a journal."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        handle = (path / "daemon.lock").open("a")
    except OSError as exc:
        raise DaemonError(
            f"cannot use the state dir {path}: {exc}; check [daemon] state_dir"
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise DaemonError(
            f"another daemon already uses the state dir {path}: stop it or set another "
            "[daemon] state_dir"
        ) from exc
    return _StateLock(handle)
