"""The TOML configuration, validated once into immutable settings.

Every mistake is reported as one :class:`~sinagot.errors.ConfigError` line that
names the file, the key and the fix. Relative paths are taken relative to the
config file, so a config works from any current directory.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from ._names import length_problem, shorten
from .errors import ConfigError

__all__ = [
    "JOBQUEUE_CLUSTERS",
    "CacheSettings",
    "DaemonSettings",
    "DaskSettings",
    "ModalitySettings",
    "RunMode",
    "Settings",
    "StoreSettings",
    "TaskSettings",
    "load_settings",
    "load_store_settings",
]

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

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_STORE_TYPES = ("local", "xnat")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCRIPT_SUFFIX = ".py"
# What systemd accepts as a credential name, without a path separator.
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}")

_T = TypeVar("_T")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

# Scopes are attributes (ds.RS, rec.EEG): these names would hide the API.
_RESERVED = frozenset(
    {"run", "ids", "get", "first", "task", "modality", "id", "settings", "store", "mro"}
)


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """An experimental task and the modalities recorded during it, in config order."""

    name: str
    modalities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModalitySettings:
    """A modality's ordered scripts, with optional per-task replacements."""

    name: str
    scripts: tuple[str, ...]
    task_scripts: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

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

    def script_file(self, modality: str, script: str) -> Path:
        return self.scripts_dir / modality / f"{script}{_SCRIPT_SUFFIX}"


_KNOWN_TABLES: dict[str, tuple[str, ...]] = {
    "path": ("dataset", "scripts"),
    "records": ("id_pattern",),
    "tasks": (),
    "modalities": (),
    "run": ("mode",),
    "dask": (
        "address",
        "n_workers",
        "threads_per_worker",
        "processes",
        "jobqueue",
        "tls_ca_file",
        "tls_cert",
        "tls_key",
        "allow_plaintext",
    ),
    "log": ("level",),
    "store": (
        "type",
        "server",
        "project",
        "user",
        "password",
        "password_credential",
        "cache_dir",
        "race_condition_delay",
        "max_connections",
        "concurrent_files",
        "pipeline",
    ),
    "daemon": (
        "poll_interval",
        "max_concurrent_jobs",
        "job_timeout",
        "script_timeout",
        "max_attempts",
        "retry_backoff",
        "shutdown_timeout",
        "socket",
        "state_dir",
        "control_group",
    ),
}


def _close(name: str, choices: Sequence[str]) -> list[str]:
    # Names here are short ("RS", "EEG"): one wrong letter already halves the ratio.
    return difflib.get_close_matches(name, choices, n=1, cutoff=0.5)


class _Reader:
    """Reads one parsed config, raising ConfigErrors that name the file and key."""

    def __init__(self, path: Path) -> None:
        self.config_file = path
        self.base = path.parent

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.config_file}: {key}: {problem}; {fix}")

    def check_length(self, key: str, name: str, what: str) -> None:
        """Raise unless ``name`` fits as a file or folder name (names become both, and XNAT labels)."""
        if problem := length_problem(name, what):
            raise self.error(key, problem, "use a shorter name")

    def check_keys(self, key: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for name in table:
            if name not in allowed:
                close = _close(name, allowed)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(allowed)}"
                )
                raise self.error(f"{key}.{name}" if key else name, "unknown key", hint)

    def table(self, parent: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table", f"write it as [{key}]")
        return value

    def typed(
        self,
        table: Mapping[str, Any],
        key: str,
        name: str,
        kind: type[_T] | tuple[type, ...],
        default: _T,
        check: Callable[[Any], bool] = lambda _value: True,
        expected: str = "",
    ) -> _T:
        if name not in table:
            return default
        value = table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are ints to Python; never accept one for a number.
        valid = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not valid or not check(value):
            what = expected or " or ".join(k.__name__ for k in kinds)
            raise self.error(f"{key}.{name}", f"got {value!r}", f"set it to {what}")
        return cast(_T, value)

    def number(self, table: Mapping[str, Any], key: str, name: str, default: float) -> float:
        value = self.typed(
            table, key, name, (int, float), default, lambda v: v > 0, "a positive number"
        )
        return float(value)

    def count(self, table: Mapping[str, Any], key: str, name: str, default: int) -> int:
        return self.typed(table, key, name, int, default, lambda v: v >= 1, "an integer >= 1")

    def text(self, table: Mapping[str, Any], key: str, name: str) -> str | None:
        return self.typed(table, key, name, str, None, lambda v: bool(v), "a non-empty string")

    def path(self, table: Mapping[str, Any], key: str, name: str) -> Path | None:
        value = self.text(table, key, name)
        if value is None:
            return None
        return (self.base / Path(value).expanduser()).resolve()

    def names(
        self, table: Mapping[str, Any], key: str, name: str, file_suffix: str = ""
    ) -> tuple[str, ...]:
        """A list of names; with ``file_suffix`` (scripts are files) each must fit as a file name."""
        if name not in table:
            raise self.error(f"{key}.{name}", "is missing", f'add {name} = ["..."]')
        value = table[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{key}.{name}", f"got {value!r}", 'use a list of names: ["a", "b"]')
        what = "file name" if file_suffix else "name"
        for item in value:
            self.check_length(f"{key}.{name}", item + file_suffix, what)
            if not _NAME.fullmatch(item):
                raise self.error(
                    f"{key}.{name}", f"{item!r} is not a valid name", "use letters, digits and '_'"
                )
        if len(set(value)) != len(value):
            raise self.error(f"{key}.{name}", "lists a name twice", "remove the duplicate")
        return tuple(value)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Parse and validate the config file at ``path``."""
    reader, document = _read(path)
    return _validate(reader, document)


def load_store_settings(path: str | os.PathLike[str]) -> StoreSettings:
    """Parse the config file at ``path`` and validate only its ``[store]`` table.

    For what needs the store and nothing else (the cache commands): a config that holds
    only a ``[store]`` table is enough, and a full dataset config works too.
    """
    reader, document = _read(path)
    return _store(reader, _tables(reader, document)["store"])


def _read(path: str | os.PathLike[str]) -> tuple[_Reader, Mapping[str, Any]]:
    config_path = Path(path).expanduser().resolve()
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{config_path}: config file not found; pass the path of a sinagot.toml"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{config_path}: cannot read ({exc.strerror}); fix its permissions"
        ) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML ({exc}); fix the syntax") from None
    return _Reader(config_path), document


def _tables(reader: _Reader, document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every known table (empty when absent), after checking the table and key names."""
    reader.check_keys("", document, tuple(_KNOWN_TABLES))
    tables = {name: reader.table(document, name, name) for name in _KNOWN_TABLES}
    for name, keys in _KNOWN_TABLES.items():
        if keys:
            reader.check_keys(name, tables[name], keys)
    return tables


def _validate(reader: _Reader, document: Mapping[str, Any]) -> Settings:
    tables = _tables(reader, document)
    store = _store(reader, tables["store"])
    dataset_dir = reader.path(tables["path"], "path", "dataset")
    if store.type == "local":
        if dataset_dir is None:
            raise reader.error(
                "path.dataset", "is missing", 'add dataset = "<folder>" under [path]'
            )
        if not dataset_dir.is_dir():
            raise reader.error(
                "path.dataset", f"folder {dataset_dir} does not exist", "create it or fix the path"
            )
    elif dataset_dir is not None:
        # A remote store's local work tree: created on first use.
        dataset_dir.mkdir(parents=True, exist_ok=True)

    scripts_dir = reader.path(tables["path"], "path", "scripts")
    if scripts_dir is None:
        raise reader.error("path.scripts", "is missing", 'add scripts = "<folder>" under [path]')
    if not scripts_dir.is_dir():
        raise reader.error(
            "path.scripts", f"folder {scripts_dir} does not exist", "create it or fix the path"
        )

    pattern_text = reader.text(tables["records"], "records", "id_pattern")
    if pattern_text is None:
        raise reader.error(
            "records.id_pattern", "is missing", 'add id_pattern = "<regex>" under [records]'
        )
    try:
        id_pattern = re.compile(pattern_text)
    except re.error as exc:
        raise reader.error(
            "records.id_pattern", f"invalid regular expression ({exc})", "fix the regex"
        ) from None

    modalities = _modalities(reader, tables["modalities"])
    tasks = _tasks(reader, tables["tasks"], modalities)
    _check_task_overrides(reader, tasks, modalities)
    _check_script_files(reader, scripts_dir, tasks, modalities)

    mode = reader.typed(
        tables["run"],
        "run",
        "mode",
        str,
        "main_process",
        lambda v: v in ("main_process", "dask"),
        '"main_process" or "dask"',
    )
    level = reader.typed(
        tables["log"],
        "log",
        "level",
        str,
        "INFO",
        lambda v: v.upper() in _LOG_LEVELS,
        " or ".join(f'"{lvl}"' for lvl in _LOG_LEVELS),
    ).upper()
    return Settings(
        config_path=reader.config_file,
        dataset_dir=dataset_dir,
        scripts_dir=scripts_dir,
        id_pattern=id_pattern,
        tasks=MappingProxyType(tasks),
        modalities=MappingProxyType(modalities),
        run_mode="dask" if mode == "dask" else "main_process",
        dask=_dask(reader, tables["dask"]),
        log_level=level,
        store=store,
        daemon=_daemon(reader, tables["daemon"]),
    )


def _modalities(reader: _Reader, table: Mapping[str, Any]) -> dict[str, ModalitySettings]:
    if not table:
        raise reader.error(
            "modalities", "no modality is defined", 'add [modalities.EEG] with scripts = ["..."]'
        )
    result: dict[str, ModalitySettings] = {}
    for name, body in table.items():
        key = f"modalities.{name}"
        reader.check_length(f"modalities.{shorten(name)}", name, "modality name")
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise reader.error(
                key, "is not a valid modality name", "use letters, digits and '_', not an API name"
            )
        body = reader.table(table, key, name)
        reader.check_keys(key, body, ("scripts", "tasks"))
        per_task: dict[str, tuple[str, ...]] = {}
        overrides = reader.table(body, f"{key}.tasks", "tasks")
        for task, override in overrides.items():
            task_key = f"{key}.tasks.{task}"
            override = reader.table(overrides, task_key, task)
            reader.check_keys(task_key, override, ("scripts",))
            per_task[task] = reader.names(override, task_key, "scripts", _SCRIPT_SUFFIX)
        result[name] = ModalitySettings(
            name=name,
            scripts=reader.names(body, key, "scripts", _SCRIPT_SUFFIX),
            task_scripts=MappingProxyType(per_task),
        )
    return result


def _tasks(
    reader: _Reader, table: Mapping[str, Any], modalities: Mapping[str, ModalitySettings]
) -> dict[str, TaskSettings]:
    if not table:
        raise reader.error(
            "tasks", "no task is defined", 'add [tasks.RS] with modalities = ["..."]'
        )
    result: dict[str, TaskSettings] = {}
    for name in table:
        key = f"tasks.{name}"
        reader.check_length(f"tasks.{shorten(name)}", name, "task name")
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise reader.error(
                key, "is not a valid task name", "use letters, digits and '_', not an API name"
            )
        if name in modalities:
            raise reader.error(
                key, f"{name!r} is also a modality name", "give tasks and modalities distinct names"
            )
        body = reader.table(table, key, name)
        reader.check_keys(key, body, ("modalities",))
        names = reader.names(body, key, "modalities")
        for modality in names:
            if modality not in modalities:
                close = _close(modality, list(modalities))
                fix = f"did you mean {close[0]!r}?" if close else f"add [modalities.{modality}]"
                raise reader.error(f"{key}.modalities", f"unknown modality {modality!r}", fix)
        result[name] = TaskSettings(name=name, modalities=names)
    return result


def _check_task_overrides(
    reader: _Reader, tasks: Mapping[str, TaskSettings], modalities: Mapping[str, ModalitySettings]
) -> None:
    for modality in modalities.values():
        for task in modality.task_scripts:
            key = f"modalities.{modality.name}.tasks.{task}"
            if task not in tasks:
                close = _close(task, list(tasks))
                fix = f"did you mean {close[0]!r}?" if close else f"add [tasks.{task}]"
                raise reader.error(key, f"unknown task {task!r}", fix)
            if modality.name not in tasks[task].modalities:
                raise reader.error(
                    key,
                    f"task {task!r} does not record {modality.name!r}",
                    f"add it to [tasks.{task}] modalities or remove this table",
                )


def _check_script_files(
    reader: _Reader,
    scripts_dir: Path,
    tasks: Mapping[str, TaskSettings],
    modalities: Mapping[str, ModalitySettings],
) -> None:
    used = {m for task in tasks.values() for m in task.modalities}
    for modality in modalities.values():
        if modality.name not in used:
            continue
        lists = {f"modalities.{modality.name}.scripts": modality.scripts}
        for task, names in modality.task_scripts.items():
            lists[f"modalities.{modality.name}.tasks.{task}.scripts"] = names
        for key, names in lists.items():
            for script in names:
                file = scripts_dir / modality.name / f"{script}{_SCRIPT_SUFFIX}"
                if not file.is_file():
                    raise reader.error(
                        key, f"script {script!r} has no file {file}", "create it or fix the name"
                    )


def _store(reader: _Reader, table: Mapping[str, Any]) -> StoreSettings:
    store_type = reader.typed(
        table,
        "store",
        "type",
        str,
        "local",
        lambda v: v in _STORE_TYPES,
        " or ".join(f'"{t}"' for t in _STORE_TYPES),
    )
    settings = StoreSettings(
        type=store_type,
        server=reader.text(table, "store", "server"),
        project=reader.text(table, "store", "project"),
        user=reader.text(table, "store", "user"),
        password=reader.typed(table, "store", "password", str, None),
        password_credential=reader.typed(
            table,
            "store",
            "password_credential",
            str,
            None,
            lambda v: bool(_CREDENTIAL_NAME.fullmatch(v)),
            "a systemd credential name (letters, digits, '_', '-', '.')",
        ),
        cache_dir=reader.path(table, "store", "cache_dir"),
        race_condition_delay=reader.number(table, "store", "race_condition_delay", 5.0),
        max_connections=reader.count(table, "store", "max_connections", 8),
        concurrent_files=reader.count(table, "store", "concurrent_files", 8),
        pipeline=reader.typed(
            table,
            "store",
            "pipeline",
            str,
            "sinagot",
            lambda v: bool(re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*", v)),
            "a name of letters, digits, '_', '-' or '.'",
        ),
    )
    if settings.password is not None and settings.password_credential is not None:
        raise reader.error(
            "store.password_credential",
            "conflicts with store.password",
            "remove the password from the config and keep the credential",
        )
    if store_type == "xnat":
        for name in ("server", "project", "user"):
            if getattr(settings, name) is None:
                raise reader.error(
                    f"store.{name}", "is required for type 'xnat'", f'add {name} = "..." to [store]'
                )
        server = settings.server or ""
        if not re.match(r"https?://", server):
            raise reader.error(
                "store.server", f"{server!r} is not an http(s) URL", 'use "https://host[:port]"'
            )
    return settings


def _dask(reader: _Reader, table: Mapping[str, Any]) -> DaskSettings:
    address = reader.text(table, "dask", "address")
    options = [name for name in ("n_workers", "threads_per_worker", "processes") if name in table]
    if address is not None and options:
        raise reader.error(
            f"dask.{options[0]}",
            "LocalCluster options conflict with dask.address",
            "remove one of them",
        )
    jobqueue = reader.typed(
        table,
        "dask",
        "jobqueue",
        str,
        None,
        lambda v: v in JOBQUEUE_CLUSTERS,
        " or ".join(f'"{name}"' for name in JOBQUEUE_CLUSTERS),
    )
    if jobqueue is not None and address is not None:
        raise reader.error("dask.jobqueue", "conflicts with dask.address", "remove one of them")
    local_only = [name for name in ("threads_per_worker", "processes") if name in table]
    if jobqueue is not None and local_only:
        raise reader.error(
            f"dask.{local_only[0]}",
            "is a LocalCluster option, not used with dask.jobqueue",
            "remove it and set cores/processes per job in Dask's jobqueue.yaml",
        )
    tls = _dask_tls(reader, table, address)
    allow_plaintext = reader.typed(table, "dask", "allow_plaintext", bool, False)
    if address is None and "allow_plaintext" in table:
        raise reader.error(
            "dask.allow_plaintext",
            "only applies to dask.address",
            "remove it: clusters Sinagot starts always authenticate their comms",
        )
    if (
        address is not None
        and not address.startswith(("tls://", "wss://", "inproc://"))
        and not _is_loopback_address(address)
        and not allow_plaintext
    ):
        raise reader.error(
            "dask.address",
            f"{address!r} is plaintext to another host: whoever can reach it runs code in the"
            " cluster, and the traffic can be read",
            "use tls:// with tls_ca_file, tls_cert and tls_key (or Dask's TLS settings), or set"
            " allow_plaintext = true if the network is trusted",
        )
    return DaskSettings(
        address=address,
        n_workers=reader.count(table, "dask", "n_workers", 0) or None,
        threads_per_worker=reader.count(table, "dask", "threads_per_worker", 0) or None,
        processes=reader.typed(table, "dask", "processes", bool, None),
        jobqueue=jobqueue,
        tls_ca_file=tls[0],
        tls_cert=tls[1],
        tls_key=tls[2],
        allow_plaintext=allow_plaintext,
    )


def _dask_tls(
    reader: _Reader, table: Mapping[str, Any], address: str | None
) -> tuple[Path | None, Path | None, Path | None]:
    """The ``[dask]`` TLS files: all for an external ``tls://`` scheduler, or none."""
    names = ("tls_ca_file", "tls_cert", "tls_key")
    files = tuple(reader.path(table, "dask", name) for name in names)
    given = [name for name, file in zip(names, files, strict=True) if file is not None]
    if not given:
        return None, None, None
    if address is None or not address.startswith("tls://"):
        raise reader.error(
            f"dask.{given[0]}",
            "only applies to a tls:// dask.address",
            "remove it: clusters Sinagot starts make their own certificates",
        )
    for name, file in zip(names, files, strict=True):
        if name != "tls_key" and file is None:
            raise reader.error(
                f"dask.{name}", "is missing", "give tls_ca_file and tls_cert (and tls_key)"
            )
        if file is not None and not file.is_file():
            raise reader.error(f"dask.{name}", f"no file {file}", "fix the path")
    return files[0], files[1], files[2]


def _is_loopback_address(address: str) -> bool:
    """Whether a Dask address (``tcp://host:port``, ``host:port``) names this machine's loopback."""
    location = address.split("://", 1)[1] if "://" in address else address
    host = urlsplit(f"//{location}").hostname or ""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _daemon(reader: _Reader, table: Mapping[str, Any]) -> DaemonSettings:
    return DaemonSettings(
        poll_interval=reader.number(table, "daemon", "poll_interval", 60.0),
        max_concurrent_jobs=reader.count(table, "daemon", "max_concurrent_jobs", 4),
        job_timeout=reader.number(table, "daemon", "job_timeout", 3600.0),
        script_timeout=(
            reader.number(table, "daemon", "script_timeout", 1.0)
            if "script_timeout" in table
            else None
        ),
        max_attempts=reader.count(table, "daemon", "max_attempts", 3),
        retry_backoff=reader.number(table, "daemon", "retry_backoff", 30.0),
        shutdown_timeout=reader.number(table, "daemon", "shutdown_timeout", 30.0),
        socket=reader.path(table, "daemon", "socket"),
        state_dir=reader.path(table, "daemon", "state_dir"),
        control_group=reader.text(table, "daemon", "control_group"),
    )
