"""The daemon's metrics for Prometheus: ``/v1/metrics`` on the socket, ``/metrics`` over TCP.

prometheus_client renders them. Each daemon has its own registry (a test process
may run several daemons): the job and step duration histograms it observes, and a
collector that reads, at each scrape, the daemon's state (jobs by state, polls,
attempts), the process-wide transfer and cache counts (``sinagot._counters``) and
the size of each cache the datasets use.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .._counters import COUNTERS, CountsSnapshot
from .._version import __version__
from ..cache import Cache, resolve_cache_dir
from ..connectors import PaceView
from ._attempt import AttemptEnd
from ._datasets import DatasetStatus
from ._pace_report import pace_families
from ._states import DatasetHealth

if TYPE_CHECKING:
    from ._view import DaemonView

__all__ = ["CONTENT_TYPE", "DaemonMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Walking a big cache takes a while: its size is measured at most this often.
CACHE_SIZE_TTL = 60.0
# Jobs last from seconds (nothing to do) to hours (a long pipeline); steps less.
_JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_STEP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True, slots=True)
class _CacheSize:
    entries: int
    size: int
    # The file system holding the cache: its size and the bytes free for the daemon's
    # user (None: the folder does not exist yet).
    fs_size: int | None = None
    fs_free: int | None = None


def _measure(root: Path) -> _CacheSize:
    if not root.is_dir():
        return _CacheSize(0, 0)
    entries = Cache(root).entries()
    fs = os.statvfs(root)
    return _CacheSize(
        len(entries),
        sum(entry.size for entry in entries),
        fs.f_blocks * fs.f_frsize,
        fs.f_bavail * fs.f_frsize,
    )


class _CacheSizes:
    """The size of each cache, measured again once it is older than :data:`CACHE_SIZE_TTL`."""

    def __init__(self) -> None:
        self._sizes: dict[Path, tuple[float, _CacheSize]] = {}
        self._lock = asyncio.Lock()

    async def current(self, roots: Iterable[Path]) -> dict[Path, _CacheSize]:
        async with self._lock:  # two scrapes at once walk the disk once
            now = time.monotonic()
            result = {}
            for root in sorted(set(roots)):
                known = self._sizes.get(root)
                if known is None or now - known[0] > CACHE_SIZE_TTL:
                    known = (now, await asyncio.to_thread(_measure, root))
                    self._sizes[root] = known
                result[root] = known[1]
            return result


@dataclass(frozen=True, slots=True)
class _Scrape:
    """What one scrape reports, gathered (asynchronously) before rendering."""

    datasets: Sequence[DatasetStatus]
    servers: Sequence[PaceView]
    counts: CountsSnapshot
    caches: dict[Path, _CacheSize]


class _StateCollector(Collector):
    """The daemon's state as metric families, from the scrape being rendered."""

    def __init__(self, daemon: DaemonView) -> None:
        self._daemon = daemon
        self.scrape: _Scrape | None = None

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape
        if scrape is None:
            return
        yield from self._daemon_families()
        yield from _dataset_families(scrape.datasets, self._daemon)
        yield from pace_families(scrape.servers, scrape.datasets)
        yield from _transfer_families(scrape.counts)
        yield from _cache_families(scrape.counts, scrape.caches)

    def _daemon_families(self) -> Iterator[Metric]:
        daemon = self._daemon
        info = GaugeMetricFamily(
            "sinagot_info", "Version of the running daemon.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "sinagot_start_time_seconds", "When the daemon started (epoch).", value=daemon.started
        )
        yield GaugeMetricFamily(
            "sinagot_uptime_seconds",
            "Seconds since the daemon started.",
            value=time.time() - daemon.started,
        )
        yield GaugeMetricFamily(
            "sinagot_paused", "1 while new jobs are paused.", value=float(daemon.paused)
        )
        yield GaugeMetricFamily(
            "sinagot_jobs_running", "Jobs being processed now.", value=daemon.busy_jobs
        )
        yield GaugeMetricFamily(
            "sinagot_jobs_queued",
            "Jobs claimed and waiting for a worker.",
            value=daemon.queued_jobs,
        )
        yield GaugeMetricFamily(
            "sinagot_poll_interval_seconds",
            "[daemon] poll_interval: seconds between two listings of a dataset.",
            value=daemon.settings.poll_interval,
        )
        notifications = CounterMetricFamily(
            "sinagot_notifications",
            "Notifications ([notify] urls) by outcome: delivered (sent) or not (failed).",
            labels=["outcome"],
        )
        notifications.add_metric(["sent"], daemon.notifications.sent)
        notifications.add_metric(["failed"], daemon.notifications.failed)
        yield notifications


def _dataset_families(datasets: Sequence[DatasetStatus], daemon: DaemonView) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "sinagot_jobs", "Jobs in the journal by dataset and state.", labels=["dataset", "state"]
    )
    up = GaugeMetricFamily(
        "sinagot_dataset_up",
        "1 when the last listing of the dataset succeeded.",
        labels=["dataset"],
    )
    failures = GaugeMetricFamily(
        "sinagot_dataset_consecutive_failures", "Listing failures in a row.", labels=["dataset"]
    )
    last_poll = GaugeMetricFamily(
        "sinagot_dataset_last_poll_timestamp_seconds",
        "When the last listing succeeded (epoch).",
        labels=["dataset"],
    )
    sessions = GaugeMetricFamily(
        "sinagot_dataset_sessions", "Sessions known from the listings.", labels=["dataset"]
    )
    poll_age = GaugeMetricFamily(
        "sinagot_dataset_poll_age_seconds",
        "Seconds since the last listing succeeded (since the daemon started, before one has).",
        labels=["dataset"],
    )
    down_for = GaugeMetricFamily(
        "sinagot_dataset_down_seconds",
        "Seconds since the listings began to fail (0 while they succeed).",
        labels=["dataset"],
    )
    now = time.time()
    for dataset in datasets:
        for state, count in sorted(dataset.jobs.items()):
            jobs.add_metric([dataset.name, state], count)
        up.add_metric([dataset.name], float(dataset.health is DatasetHealth.OK))
        failures.add_metric([dataset.name], dataset.failures)
        sessions.add_metric([dataset.name], dataset.sessions)
        if dataset.last_poll is not None:
            last_poll.add_metric([dataset.name], dataset.last_poll)
        poll_age.add_metric([dataset.name], now - (dataset.last_poll or daemon.started))
        down = 0.0 if dataset.down_since is None else now - dataset.down_since
        down_for.add_metric([dataset.name], down)
    polls = CounterMetricFamily(
        "sinagot_polls",
        "Listings by outcome since the daemon started.",
        labels=["dataset", "outcome"],
    )
    for name, counts in daemon.datasets_polls().items():
        for outcome, count in sorted(counts.items()):
            polls.add_metric([name, outcome], count)
    attempts = CounterMetricFamily(
        "sinagot_job_attempts",
        "Finished job attempts by outcome.",
        labels=["dataset", "outcome"],
    )
    for (name, outcome), count in sorted(daemon.completed.items()):
        attempts.add_metric([name, str(outcome)], count)
    yield from (jobs, up, failures, last_poll, sessions, poll_age, down_for, polls, attempts)


def _per_server(
    name: str, doc: str, values: dict[str, int], servers: Iterable[str]
) -> CounterMetricFamily:
    # Every server talked to has each series, at 0 until it counts: rate() and alerts
    # need a series before its first increment.
    family = CounterMetricFamily(name, doc, labels=["server"])
    for server in servers:
        family.add_metric([server], values.get(server, 0))
    return family


def _transfer_families(counts: CountsSnapshot) -> Iterator[Metric]:
    servers = sorted(counts.requests)
    yield _per_server(
        "sinagot_http_requests", "HTTP requests sent to each server.", counts.requests, servers
    )
    yield _per_server(
        "sinagot_http_request_errors",
        "Requests that got no answer or an error status (each try counts).",
        counts.request_errors,
        servers,
    )
    yield _per_server(
        "sinagot_downloaded_bytes", "Bytes received from each server.", counts.downloaded, servers
    )
    yield _per_server(
        "sinagot_uploaded_bytes", "Bytes uploaded to each server.", counts.uploaded, servers
    )


def _cache_families(counts: CountsSnapshot, caches: dict[Path, _CacheSize]) -> Iterator[Metric]:
    lookups = CounterMetricFamily(
        "sinagot_cache_lookups",
        "Entries asked of the cache: there already (hit) or downloaded (miss).",
        labels=["result"],
    )
    lookups.add_metric(["hit"], counts.cache_hits)
    lookups.add_metric(["miss"], counts.cache_misses)
    yield lookups
    asked = counts.cache_hits + counts.cache_misses
    if asked:
        yield GaugeMetricFamily(
            "sinagot_cache_hit_ratio",
            "Share of the entries asked that the cache had, since the daemon started.",
            value=counts.cache_hits / asked,
        )
    size = GaugeMetricFamily(
        "sinagot_cache_size_bytes",
        f"Bytes on disk in each cache (measured at most every {CACHE_SIZE_TTL:g} s).",
        labels=["cache"],
    )
    entries = GaugeMetricFamily("sinagot_cache_entries", "Entries in each cache.", labels=["cache"])
    fs_size = GaugeMetricFamily(
        "sinagot_cache_filesystem_size_bytes",
        "Size of the file system holding each cache.",
        labels=["cache"],
    )
    fs_free = GaugeMetricFamily(
        "sinagot_cache_filesystem_free_bytes",
        "Bytes the daemon may still write on the file system holding each cache.",
        labels=["cache"],
    )
    for root, measured in caches.items():
        size.add_metric([str(root)], measured.size)
        entries.add_metric([str(root)], measured.entries)
        if measured.fs_size is not None and measured.fs_free is not None:
            fs_size.add_metric([str(root)], measured.fs_size)
            fs_free.add_metric([str(root)], measured.fs_free)
    yield from (size, entries, fs_size, fs_free)


class DaemonMetrics:
    """The registry of one daemon: observe jobs as they end, :meth:`render` at each scrape."""

    def __init__(self, daemon: DaemonView) -> None:
        self._daemon = daemon
        self.registry = CollectorRegistry(auto_describe=False)
        self._state = _StateCollector(daemon)
        self.registry.register(self._state)
        self._jobs = Histogram(
            "sinagot_job_duration_seconds",
            "Duration of job attempts, by dataset and outcome.",
            ["dataset", "outcome"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self._steps = Histogram(
            "sinagot_step_duration_seconds",
            "Duration of the scripts a job ran, by dataset and result (ran or failed).",
            ["dataset", "status"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self._cache_sizes = _CacheSizes()

    def job_ended(self, dataset: str, end: AttemptEnd, seconds: float) -> None:
        self._jobs.labels(dataset, str(end.outcome)).observe(seconds)
        for status, step_seconds in end.steps:
            self._steps.labels(dataset, status).observe(step_seconds)

    async def render(self) -> bytes:
        """The metrics in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        daemon = self._daemon
        datasets = await daemon.dataset_statuses()
        roots = [resolve_cache_dir(s.store.cache_dir) for s in daemon.dataset_settings()]
        caches = await self._cache_sizes.current(roots)
        # No await from here on: the collector reads this scrape while rendering it.
        self._state.scrape = _Scrape(datasets, daemon.server_paces(), COUNTERS.snapshot(), caches)
        return generate_latest(self.registry)
