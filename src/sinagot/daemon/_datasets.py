"""The datasets the daemon serves: each one's live state and status, building and closing them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._ids import IdFilter
from ..errors import ConfigError
from ._backend import BackendFactory, DatasetBackend, ListedSession, PacedBackend
from ._configs import without_password
from ._one_line import one_line
from ._pipelines import PipelineReport
from ._states import DatasetHealth, JobState

if TYPE_CHECKING:
    from ..config import Settings
    from ..connectors import ServerPaces
    from ..engine import Fingerprints

__all__ = ["DatasetStatus", "ServedDataset", "ServedDatasets", "build_datasets", "close_backend"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    name: str
    config: str
    health: DatasetHealth
    last_poll: float | None
    next_poll: float | None
    failures: int
    last_error: str | None
    sessions: int
    jobs: dict[str, int]
    down_since: float | None = None
    # Seconds between the last listing and the next (adaptive polling, a slowed server).
    poll_interval: float | None = None
    # Stale sessions by the steps they run again for; steps removed from the pipeline.
    pipeline: PipelineReport = field(default_factory=PipelineReport)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "health": str(self.health),
            "last_poll": self.last_poll,
            "next_poll": self.next_poll,
            "failures": self.failures,
            "last_error": self.last_error,
            "sessions": self.sessions,
            "jobs": self.jobs,
            "down_since": self.down_since,
            "poll_interval": self.poll_interval,
            "pipeline": self.pipeline.to_json(),
        }


class ServedDataset:
    """A configured dataset while the daemon serves it (replaced as a whole on reload)."""

    __slots__ = (
        "active_jobs",
        "backend",
        "closed",
        "compared",
        "down_since",
        "failures",
        "health",
        "ids",
        "last_error",
        "last_poll",
        "name",
        "next_poll",
        "pipeline",
        "pipeline_report",
        "poll_delay",
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
        self.health = DatasetHealth.UNKNOWN
        self.failures = 0
        # When the listings began to fail (epoch), None while they succeed.
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.last_poll: float | None = None
        self.next_poll: float | None = None
        self.poll_delay: float | None = None
        # The last listing compared with the journal (the same object again: an unchanged
        # listing, see DatasetBackend.list_sessions).
        self.compared: Sequence[ListedSession] = ()
        self.ids = IdFilter(settings.id_pattern, self.name)
        self.polls: dict[str, int] = {"ok": 0, "error": 0}
        self.active_jobs = 0
        self.retired = False
        self.closed = False
        # The pipeline last made current in the journal, and what it meant then.
        self.pipeline: Fingerprints | None = None
        self.pipeline_report = PipelineReport()

    @property
    def server(self) -> str | None:
        """The URL of the dataset's server, as its pace and its listing gate know it."""
        server = self.settings.store.server
        return server.rstrip("/") if server else None

    def carry_over(self, old: ServedDataset) -> None:
        """Keep what the status shows across a reload of the same dataset."""
        self.health, self.failures, self.last_error = old.health, old.failures, old.last_error
        self.down_since = old.down_since
        self.last_poll, self.polls = old.last_poll, old.polls
        if self.ids.same_pattern(old.ids):
            self.ids = old.ids

    def status(self, jobs: Mapping[str, int], stale: PipelineReport | None = None) -> DatasetStatus:
        """Its status, with ``jobs`` counted by state and its ``stale`` jobs by step."""
        return DatasetStatus(
            name=self.name,
            config=str(self.settings.config_path),
            health=self.health,
            last_poll=self.last_poll,
            next_poll=self.next_poll,
            failures=self.failures,
            last_error=self.last_error,
            sessions=len(self.compared),
            jobs=dict(jobs),
            down_since=self.down_since,
            poll_interval=self.poll_delay,
            pipeline=PipelineReport(
                stale.sessions if stale else 0,
                stale.steps if stale else MappingProxyType({}),
                self.pipeline_report.removed,
                self.pipeline_report.broken,
            ),
        )


class ServedDatasets:
    """The datasets the daemon serves now, by name, and those a reload retired.

    A dataset retired while jobs of it still ran keeps its backend open for them;
    the daemon closes it after the last one.
    """

    def __init__(self) -> None:
        self.current: dict[str, ServedDataset] = {}
        self.retired: list[ServedDataset] = []

    def replace(self, datasets: dict[str, ServedDataset]) -> list[ServedDataset]:
        """Serve ``datasets`` from now on; return the old ones no job uses (to close now).

        The old datasets' pollers are cancelled; the new ones keep what the status
        shows of the old datasets of the same names.
        """
        idle = []
        for dataset in self.current.values():
            if dataset.poller is not None:
                dataset.poller.cancel()
            dataset.retired = True
            replacement = datasets.get(dataset.name)
            if replacement is not None:
                replacement.carry_over(dataset)
            if dataset.active_jobs == 0:
                idle.append(dataset)
            else:
                self.retired.append(dataset)
        self.current = datasets
        return idle

    def every(self) -> list[ServedDataset]:
        """Current and retired: what to close when the daemon stops."""
        return [*self.current.values(), *self.retired]

    def poll_now(self, names: Sequence[str] | None = None) -> list[str]:
        """Wake the pollers of the named datasets (all when None); return their names."""
        chosen = [d for d in self.current.values() if names is None or d.name in names]
        for dataset in chosen:
            dataset.poll_now.set()
        return [d.name for d in chosen]

    def down(self) -> list[str]:
        """The names of the datasets whose server did not answer the last listing, sorted."""
        return sorted(d.name for d in self.current.values() if d.health is DatasetHealth.DOWN)

    def statuses(
        self, counts: Mapping[str, Mapping[str, int]], stale: Mapping[str, PipelineReport]
    ) -> list[DatasetStatus]:
        """Each dataset's status, with ``counts`` of its jobs by state and its ``stale`` jobs
        by step, from the journal."""
        result = []
        for dataset in self.current.values():
            jobs = {str(state): 0 for state in JobState}
            jobs.update(counts.get(dataset.name, {}))
            result.append(dataset.status(jobs, stale.get(dataset.name, PipelineReport())))
        return result

    def polls(self) -> dict[str, dict[str, int]]:
        return {name: dict(d.polls) for name, d in self.current.items()}


async def build_datasets(
    all_settings: Sequence[Settings], factory: BackendFactory, paces: ServerPaces | None = None
) -> dict[str, ServedDataset]:
    """One served dataset per config, by name; nothing is left open when one fails.

    A backend that can follow the pace of its server gets it from ``paces``.
    """
    datasets: dict[str, ServedDataset] = {}
    try:
        for settings in all_settings:
            backend = factory(settings)
            if paces is not None and isinstance(backend, PacedBackend):
                backend.pace_with(paces)
            dataset = ServedDataset(without_password(settings), backend)
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


async def close_backend(dataset: ServedDataset) -> None:
    """Close the dataset's backend once; a failure is logged, never raised."""
    if dataset.closed:
        return
    dataset.closed = True
    try:
        await dataset.backend.aclose()
    except Exception as exc:
        logger.warning("%s: closing the backend failed: %s", dataset.name, one_line(exc))
