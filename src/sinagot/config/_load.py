"""Loading a config file: its tables, the dataset's tasks, modalities and scripts."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._names import length_problem, shorten
from ..errors import ConfigError
from ._notify import notify_settings
from ._reader import KNOWN_TABLES, NAME, Reader, close_names
from ._services import daemon_settings, dask_settings, store_settings
from ._settings import (
    SCRIPT_SUFFIX,
    FileMatch,
    ModalitySettings,
    Settings,
    StoreSettings,
    TaskSettings,
)
from ._v01 import translate_v01

__all__ = ["load_settings", "load_store_settings", "name_problem"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Scopes are attributes (ds.RS, rec.EEG): these names would hide the API (Sinagot 0.1's
# included).
_RESERVED = frozenset(
    {
        "run",
        "ids",
        "get",
        "first",
        "task",
        "modality",
        "id",
        "settings",
        "store",
        "mro",
        "all",
        "has",
        "count",
        "count_detail",
        "tasks",
        "modalities",
        "steps",
        "records",
        "config",
        "logs",
        "status",
        "units",
        "data_path",
        "scripts_path",
        "logger",
        "dataset",
    }
)
# A folder given as the config: Sinagot 0.1's name of the file it holds.
CONFIG_IN_FOLDER = "dataset.toml"
_MODEL_KINDS = ("subset", "record")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a task or modality name, or None if it can."""
    if not NAME.fullmatch(name):
        return "a task or modality name has only letters, digits and '_', and starts with no digit"
    if name in _RESERVED:
        return f"{name!r} is a name of the Python API (ds.{name})"
    return length_problem(name, "name")


def load_settings(
    path: str | os.PathLike[str], *, dataset_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """Parse and validate the config file at ``path`` (or the ``dataset.toml`` of a folder).

    ``dataset_dir`` replaces ``[path] dataset`` (Sinagot 0.1's ``data_path=``).
    """
    reader, written = _read(path)
    document, notes = translate_v01(reader, written)
    if dataset_dir is not None:
        path_table = dict(reader.table(document, "path", "path"))
        path_table["dataset"] = str(Path(dataset_dir).expanduser().resolve())
        document["path"] = path_table
    settings = _validate(reader, document)
    return dataclasses.replace(
        settings, notes=tuple(notes), document=MappingProxyType(dict(written))
    )


def load_store_settings(path: str | os.PathLike[str]) -> StoreSettings:
    """Parse the config file at ``path`` and validate only its ``[store]`` table.

    For what needs the store and nothing else (the cache commands): a config that holds
    only a ``[store]`` table is enough, and a full dataset config works too.
    """
    reader, document = _read(path)
    return store_settings(reader, _tables(reader, document)["store"])


def _read(path: str | os.PathLike[str]) -> tuple[Reader, Mapping[str, Any]]:
    config_path = Path(path).expanduser().resolve()
    if config_path.is_dir():
        config_path = config_path / CONFIG_IN_FOLDER
        if not config_path.exists():
            raise ConfigError(
                f"{config_path.parent}: a folder without {CONFIG_IN_FOLDER}; pass the path of"
                f" the config file, or add {CONFIG_IN_FOLDER} to the folder"
            )
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
    return Reader(config_path), document


def _tables(reader: Reader, document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every known table (empty when absent), after checking the table and key names."""
    reader.check_keys("", document, tuple(KNOWN_TABLES))
    tables = {name: reader.table(document, name, name) for name in KNOWN_TABLES}
    for name, keys in KNOWN_TABLES.items():
        if keys:
            reader.check_keys(name, tables[name], keys)
    return tables


def _validate(reader: Reader, document: Mapping[str, Any]) -> Settings:
    tables = _tables(reader, document)
    store = store_settings(reader, tables["store"])
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
        try:
            dataset_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise reader.error(
                "path.dataset",
                f"cannot create folder {dataset_dir} ({exc.strerror})",
                "fix the path",
            ) from None

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

    file_match = _file_match(reader, tables["records"], "records")
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
        dask=dask_settings(reader, tables["dask"]),
        log_level=level,
        store=store,
        daemon=daemon_settings(reader, tables["daemon"]),
        file_match=file_match,
        log_format=reader.text(tables["log"], "log", "format"),
        notify=notify_settings(reader, tables["notify"]),
    )


def _file_match(reader: Reader, table: Mapping[str, Any], key: str) -> FileMatch | None:
    """Sinagot 0.1's ``file_match = [whole pattern, files]`` (see sinagot.engine._freeform)."""
    if "file_match" not in table:
        return None
    value = table["file_match"]
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is bool for v in value)):
        raise reader.error(
            f"{key}.file_match",
            f"got {value!r}",
            "use [true, true]: match the whole PATH_IN pattern (false: its parent folder),"
            " then files (false: folders)",
        )
    return (value[0], value[1])


def _models(reader: Reader, body: Mapping[str, Any], key: str) -> dict[str, str]:
    """Sinagot 0.1's ``models.subset`` / ``models.record``: class names of custom models."""
    table = reader.table(body, f"{key}.models", "models")
    reader.check_keys(f"{key}.models", table, _MODEL_KINDS)
    models: dict[str, str] = {}
    for kind in _MODEL_KINDS:
        name = reader.text(table, f"{key}.models", kind)
        if name is not None:
            if not NAME.fullmatch(name):
                raise reader.error(
                    f"{key}.models.{kind}", f"{name!r} is not a class name", "fix the name"
                )
            models[kind] = name
    return models


def _modalities(reader: Reader, table: Mapping[str, Any]) -> dict[str, ModalitySettings]:
    if not table:
        raise reader.error(
            "modalities", "no modality is defined", 'add [modalities.EEG] with scripts = ["..."]'
        )
    result: dict[str, ModalitySettings] = {}
    for name, body in table.items():
        key = f"modalities.{name}"
        reader.check_length(f"modalities.{shorten(name)}", name, "modality name")
        if name_problem(name):
            raise reader.error(
                key, "is not a valid modality name", "use letters, digits and '_', not an API name"
            )
        body = reader.table(table, key, name)
        reader.check_keys(key, body, ("scripts", "tasks", "file_match", "models"))
        per_task: dict[str, tuple[str, ...]] = {}
        overrides = reader.table(body, f"{key}.tasks", "tasks")
        for task, override in overrides.items():
            task_key = f"{key}.tasks.{task}"
            override = reader.table(overrides, task_key, task)
            reader.check_keys(task_key, override, ("scripts",))
            per_task[task] = reader.names(override, task_key, "scripts", SCRIPT_SUFFIX)
        result[name] = ModalitySettings(
            name=name,
            # A modality without scripts holds data that no script reads (yet).
            scripts=reader.names(body, key, "scripts", SCRIPT_SUFFIX) if "scripts" in body else (),
            task_scripts=MappingProxyType(per_task),
            file_match=_file_match(reader, body, key),
            models=MappingProxyType(_models(reader, body, key)),
        )
    return result


def _tasks(
    reader: Reader, table: Mapping[str, Any], modalities: Mapping[str, ModalitySettings]
) -> dict[str, TaskSettings]:
    if not table:
        raise reader.error(
            "tasks", "no task is defined", 'add [tasks.RS] with modalities = ["..."]'
        )
    result: dict[str, TaskSettings] = {}
    for name in table:
        key = f"tasks.{name}"
        reader.check_length(f"tasks.{shorten(name)}", name, "task name")
        if name_problem(name):
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
                close = close_names(modality, list(modalities))
                fix = f"did you mean {close[0]!r}?" if close else f"add [modalities.{modality}]"
                raise reader.error(f"{key}.modalities", f"unknown modality {modality!r}", fix)
        result[name] = TaskSettings(name=name, modalities=names)
    return result


def _check_task_overrides(
    reader: Reader, tasks: Mapping[str, TaskSettings], modalities: Mapping[str, ModalitySettings]
) -> None:
    for modality in modalities.values():
        for task in modality.task_scripts:
            key = f"modalities.{modality.name}.tasks.{task}"
            if task not in tasks:
                close = close_names(task, list(tasks))
                fix = f"did you mean {close[0]!r}?" if close else f"add [tasks.{task}]"
                raise reader.error(key, f"unknown task {task!r}", fix)
            if modality.name not in tasks[task].modalities:
                raise reader.error(
                    key,
                    f"task {task!r} does not record {modality.name!r}",
                    f"add it to [tasks.{task}] modalities or remove this table",
                )


def _check_script_files(
    reader: Reader,
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
        for kind, class_name in modality.models.items():
            file = scripts_dir / modality.name / "models" / f"{kind}{SCRIPT_SUFFIX}"
            if not file.is_file():
                raise reader.error(
                    f"modalities.{modality.name}.models.{kind}",
                    f"class {class_name!r} has no file {file}",
                    "create it or fix the name",
                )
        for key, names in lists.items():
            for script in names:
                file = scripts_dir / modality.name / f"{script}{SCRIPT_SUFFIX}"
                if not file.is_file():
                    raise reader.error(
                        key, f"script {script!r} has no file {file}", "create it or fix the name"
                    )
