"""The validated settings: small immutable values, one per table of the config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "JOBQUEUE_CLUSTERS",
    "SCRIPT_SUFFIX",
    "CacheSettings",
    "DaemonSettings",
    "DaskSettings",
    "FileMatch",
    "ModalitySettings",
    "NotifySettings",
    "RunMode",
    "Settings",
    "StoreSettings",
    "TaskSettings",
]

SCRIPT_SUFFIX = ".py"

RunMode = Literal["main_process", "dask"]
# [dask] jobqueue -> the dask_jobqueue cluster class.
JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """An experimental task and the modalities recorded during it, in config order."""

    name: str
    modalities: tuple[str, ...]


# Sinagot 0.1's [records] / [modalities.M] file_match: (match the whole PATH_IN pattern,
# match files rather than folders).
FileMatch = tuple[bool, bool]


@dataclass(frozen=True, slots=True)
class ModalitySettings:
    """A modality's ordered scripts, with optional per-task replacements.

    ``file_match`` (Sinagot 0.1) overrides ``[records] file_match`` for this modality;
    ``models`` names its custom classes (``{"subset": "BehaviorSubset", "record": ...}``,
    in ``<scripts>/<modality>/models/<kind>.py``).
    """

    name: str
    scripts: tuple[str, ...]
    task_scripts: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    file_match: FileMatch | None = None
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def scripts_for(self, task: str) -> tuple[str, ...]:
        """The scripts that run for this modality within ``task``."""
        return self.task_scripts.get(task, self.scripts)


@dataclass(frozen=True, slots=True)
class DaskSettings:
    """The ``address`` of a running scheduler, or LocalCluster options, or a dask-jobqueue
    cluster type (``jobqueue = "slurm"``: configured in Dask's jobqueue.yaml, scaled to
    ``n_workers`` jobs)."""

    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    processes: bool | None = None
    jobqueue: str | None = None
    # An external scheduler's TLS: CA, client certificate and key (Dask's own
    # distributed.comm.tls settings apply when these are not given).
    tls_ca_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Plaintext TCP to a scheduler on another host: anyone on the path can run code.
    allow_plaintext: bool = False


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The shared download cache: its folder (None: ``$CACHE_DIRECTORY``, else the user
    cache dir) and how a process waits for another that downloads the same entry."""

    dir: Path | None = None
    race_condition_delay: float = 5.0
    lock_timeout: float = 3600.0
    concurrent_files: int = 8


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where the dataset lives. The password never appears in the repr."""

    type: str = "local"
    server: str | None = None
    project: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    # A systemd credential (LoadCredential=NAME:...) holding the password.
    password_credential: str | None = None
    cache_dir: Path | None = None
    race_condition_delay: float = 5.0
    max_connections: int = 8
    concurrent_files: int = 8
    pipeline: str = "sinagot"

    @property
    def cache(self) -> CacheSettings:
        return CacheSettings(
            dir=self.cache_dir,
            race_condition_delay=self.race_condition_delay,
            concurrent_files=self.concurrent_files,
        )


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """Settings of the long-running service; every one has a default."""

    poll_interval: float = 60.0
    # After a listing that found new or changed sessions, the next one comes sooner, down
    # to this (see sinagot.daemon's adaptive polling); poll_interval itself: no speed-up.
    min_poll_interval: float = 10.0
    # Seconds of good answers for a server slowed down by back-pressure to be back to its
    # normal pace, step by step (see sinagot.connectors.ServerPace).
    server_recovery: float = 40.0
    # Project listings in flight at once on one server, all configs together: a
    # whole-project listing is the heaviest query a poll makes of an XNAT.
    listings_per_server: int = 2
    # How often the scripts' files are stat'ed for changes of the pipeline (see
    # sinagot.engine.FingerprintProbe): a change makes the sessions it affects stale.
    pipeline_check_interval: float = 10.0
    max_concurrent_jobs: int = 4
    job_timeout: float = 3600.0
    # None: a script may use the whole job_timeout.
    script_timeout: float | None = None
    max_attempts: int = 3
    retry_backoff: float = 30.0
    shutdown_timeout: float = 30.0
    socket: Path | None = None
    state_dir: Path | None = None
    control_group: str | None = None
    # (host, port) of the Prometheus endpoint /metrics over TCP; None: the socket's only.
    metrics_address: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Who the daemon tells, through Apprise, when jobs fail or a server goes away.

    The URLs may hold secrets (a mail password, a webhook token): never in the repr.
    """

    urls: tuple[str, ...] = field(default=(), repr=False)
    # A dataset whose listings fail this long is announced unhealthy (then its recovery).
    unhealthy_after: float = 600.0
    # Failures within this many seconds of the first go in one message.
    group_window: float = 60.0
    # At most this many messages in any hour; what waits goes in the next one allowed.
    max_per_hour: int = 20


@dataclass(frozen=True, slots=True)
class Settings:
    """A validated configuration file."""

    config_path: Path
    dataset_dir: Path | None
    scripts_dir: Path
    id_pattern: re.Pattern[str]
    tasks: Mapping[str, TaskSettings]
    modalities: Mapping[str, ModalitySettings]
    run_mode: RunMode = "main_process"
    dask: DaskSettings = DaskSettings()
    log_level: str = "INFO"
    store: StoreSettings = StoreSettings()
    daemon: DaemonSettings = DaemonSettings()
    # How Sinagot 0.1 layouts find record ids in file names (None: the whole pattern, files
    # or folders; see sinagot.engine._freeform).
    file_match: FileMatch | None = None
    # [log] format of the console lines (None: Sinagot's own).
    log_format: str | None = None
    # One line per Sinagot 0.1 key read under our name (see config._v01).
    notes: tuple[str, ...] = ()
    # The TOML document as written (Sinagot 0.1's ``Dataset.config``); never in the repr:
    # it may hold a password.
    document: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    notify: NotifySettings = NotifySettings()

    def script_file(self, modality: str, script: str) -> Path:
        return self.scripts_dir / modality / f"{script}{SCRIPT_SUFFIX}"
