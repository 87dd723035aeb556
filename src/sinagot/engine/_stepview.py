"""Sinagot 0.1's view of steps: ``scope.steps``, ``Step``, statuses and counts as DataFrames.

A step is a script of one modality within a scope; for a record, of one task too.
Its status is Sinagot 0.1's (:class:`~sinagot.engine._status_log.LegacyStatus`), read from
the work tree and the record's status log, as 0.1 showed it:

- DONE when its outputs exist,
- else PROCESSING or ERROR when that is the last status logged for it,
- else DATA_READY when its inputs exist, INIT when they do not.

Runs decide by provenance, not by these (see ``sinagot.engine._provenance``). The tables
are pandas DataFrames, as in 0.1: pandas is imported when one is asked for.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._report import RunReport
from ..errors import NoModalityError, NotFoundError, NotUnitError, SinagotError
from ._scripts import ScriptPaths, ScriptTemplate, format_paths, load_script, shape_paths
from ._status_log import (
    LOG_STEP_LABEL,
    LOG_STEP_STATUS,
    LegacyStatus,
    last_statuses,
    read_status_log,
)

if TYPE_CHECKING:
    import pandas

    from ..config import Settings
    from ..connectors import Store
    from ._worktree import WorkTree

__all__ = [
    "Step",
    "StepCollection",
    "count_detail",
    "record_count_detail",
    "record_logs",
    "record_status_json",
]


# The views read a dataset's scopes through these protocols, not the classes of
# _dataset (which builds its views from this module).
class ViewedDataset(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> Store: ...
    @property
    def _tree(self) -> WorkTree: ...


class ViewedScope(Protocol):
    @property
    def task(self) -> str | None: ...
    @property
    def modality(self) -> str | None: ...
    @property
    def _dataset(self) -> ViewedDataset: ...
    @property
    def steps(self) -> StepCollection: ...
    def run(self, step_label: str | None = None, force: bool = False) -> RunReport: ...
    def modalities(self) -> Iterator[ViewedScope]: ...
    def _units(self) -> list[tuple[str, str]]: ...
    def _script_names(self) -> list[str]: ...
    def _scope_records(self) -> Sequence[ViewedRecord]: ...


class ViewedRecord(ViewedScope, Protocol):
    @property
    def id(self) -> str: ...
    def units(self) -> Iterator[ViewedScope]: ...


_STATUS_COLUMNS = ("record_id", "task", "modality", "step_index", LOG_STEP_LABEL, LOG_STEP_STATUS)
_COUNT_COLUMNS = ("task", "modality", "count")
_GROUP_MODES = ("all", "any", "mean")


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise SinagotError(
            "this table is a pandas DataFrame, and pandas is not installed:"
            " pip install 'sinagot[pandas]'"
        ) from None


def _exist(root: Path, paths: Iterable[str]) -> bool:
    return all((root / path).exists() for path in paths)


class Step:
    """Script ``script`` of the scope ``model`` (which must have a modality).

    ``script`` is an instance of the script's class with its paths in the dataset (for
    a scope without a record or a task, ``{id}`` / ``{task}`` stay in them); it is
    loaded again whenever its file changed.
    """

    def __init__(self, script: str, model: ViewedScope) -> None:
        if model.modality is None:
            raise NoModalityError(
                f"{model!r} has no modality: a step is a script of one modality; scope it"
                " first (ds.EEG.steps, rec.EEG.steps)"
            )
        dataset = model._dataset
        file = dataset.settings.script_file(model.modality, script)
        if not file.is_file():
            raise NotFoundError(f"{model!r} has no step {script!r}: no script file {file}")
        self.model = model
        self.label = script
        self.task = model.task
        self.modality: str = model.modality
        self.id: str | None = getattr(model, "id", None)
        loaded = load_script(file, model.modality, script)
        self.script_class: type[ScriptTemplate] = loaded.cls
        record, task = self.id or "{id}", self.task or "{task}"
        root = dataset._tree.root
        self._inputs = format_paths(loaded.path_in, record, task)
        self._outputs = format_paths(loaded.path_out, record, task)
        self.script: ScriptTemplate = loaded.cls(
            id=record,
            task=task,
            path=ScriptPaths(
                input=shape_paths(loaded.path_in, record, task, root),
                output=shape_paths(loaded.path_out, record, task, root),
            ),
            logger=logging.getLogger(f"sinagot.scripts.{model.modality}.{script}"),
        )

    def status(self) -> LegacyStatus:
        """The step's Sinagot 0.1 status (see the module docstring)."""
        if self.id is None or self.task is None:
            raise NotUnitError(
                f"the status of step {self.label!r} needs one record and one task:"
                f" ask it of rec.{self.task or 'TASK'}.{self.modality}.steps"
            )
        dataset = self.model._dataset
        root = dataset._tree.root
        if _exist(root, self._outputs):
            return LegacyStatus.DONE
        log = dataset._tree.status_log(dataset.store.local_root, self.id)
        last = last_statuses(log).get((self.task, self.modality, self.label))
        if last in (LegacyStatus.PROCESSING, LegacyStatus.ERROR):
            return LegacyStatus(last)
        return LegacyStatus.DATA_READY if _exist(root, self._inputs) else LegacyStatus.INIT

    def run(self, force: bool = False) -> RunReport:
        """Run this step alone (the steps it reads from are checked, not run)."""
        return self.model.run(self.label, force=force)

    def logs(self) -> pandas.DataFrame:
        """The status log lines of this step, newest first."""
        logs = self.model.logs() if hasattr(self.model, "logs") else _pandas().DataFrame()
        if logs.empty:
            return logs
        return logs[logs[LOG_STEP_LABEL] == self.label]

    def __repr__(self) -> str:
        return (
            f"<Step instance | scope: {self.model!r}, task: {self.task},"
            f" modality: {self.modality}, label: {self.label}>"
        )


class StepCollection:
    """The steps of a scope (``scope.steps``): for a scope without a modality, ``get``,
    ``first`` and ``count`` answer a dict by modality (as Sinagot 0.1.4 did)."""

    def __init__(self, model: ViewedScope) -> None:
        self.model = model
        self.task = model.task
        self.modality = model.modality

    def _modality_scopes(self) -> list[ViewedScope]:
        return list(self.model.modalities())

    def get(self, script: str) -> Any:
        """Step ``script`` (with no modality: {modality: Step or None})."""
        if self.modality is None:
            return {
                scope.modality: _or_none(lambda s=scope: Step(script, s))
                for scope in self._modality_scopes()
            }
        return Step(script, self.model)

    def first(self) -> Any:
        """The first step (None if the scope has none; with no modality: a dict)."""
        if self.modality is None:
            return {scope.modality: scope.steps.first() for scope in self._modality_scopes()}
        names = self.model._script_names()
        return Step(names[0], self.model) if names else None

    def all(self) -> Iterator[Step]:
        """Every step of the scope, modality by modality."""
        scopes = self._modality_scopes() if self.modality is None else [self.model]
        for scope in scopes:
            for name in scope._script_names():
                yield Step(name, scope)

    def find(self, pattern: str) -> Iterator[Step]:
        """The steps whose script name contains ``pattern``."""
        return (step for step in self.all() if pattern in step.label)

    def count(self) -> Any:
        """The number of steps (with no modality: {modality: number})."""
        if self.modality is None:
            return {scope.modality: scope.steps.count() for scope in self._modality_scopes()}
        return len(self.model._script_names())

    def run(self, step_label: str | None = None, force: bool = False) -> RunReport:
        """Run the scope's steps (``step_label``: that one alone)."""
        return self.model.run(step_label, force=force)

    def status(self) -> pandas.DataFrame:
        """One row per step and record: ``record_id``, ``task``, ``modality``,
        ``step_index`` (from 1 in its unit), ``step_label`` and ``step_status``."""
        pandas = _pandas()
        records = self.model._scope_records()
        rows = [row for record in records for row in _record_status_rows(record)]
        return pandas.DataFrame(rows, columns=list(_STATUS_COLUMNS))


def _or_none(make: Any) -> Step | None:
    try:
        step: Step = make()
    except NotFoundError:
        return None
    return step


def _record_status_rows(record: ViewedRecord) -> list[dict[str, Any]]:
    rows = []
    for unit in record.units():
        for index, name in enumerate(unit._script_names(), 1):
            step = Step(name, unit)
            rows.append(
                {
                    "record_id": record.id,
                    "task": unit.task,
                    "modality": unit.modality,
                    "step_index": index,
                    LOG_STEP_LABEL: name,
                    LOG_STEP_STATUS: int(step.status()),
                }
            )
    return rows


def record_status_json(record: ViewedRecord) -> str:
    """The record's step statuses as JSON: ``{task: {modality: [{step_index, step_label,
    step_status}, ...]}}`` (Sinagot 0.1's ``Record.status_json()``, for web pages)."""
    tree: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in _record_status_rows(record):
        steps = tree.setdefault(row["task"], {}).setdefault(row["modality"], [])
        steps.append({key: row[key] for key in ("step_index", LOG_STEP_LABEL, LOG_STEP_STATUS)})
    return json.dumps(tree)


def _has_data(record: ViewedRecord, task: str, modality: str) -> int:
    """1 if the first script of the unit finds its inputs for ``record``, else 0."""
    dataset = record._dataset
    scripts = dataset.settings.modalities[modality].scripts_for(task)
    if not scripts:
        return 0
    loaded = load_script(dataset.settings.script_file(modality, scripts[0]), modality, scripts[0])
    return int(_exist(dataset._tree.root, format_paths(loaded.path_in, record.id, task)))


def record_count_detail(
    record: ViewedRecord, groupby: str | list[str] | None, group_mode: str = "all"
) -> pandas.DataFrame:
    """Whether ``record`` has data in each of its units, optionally grouped."""
    if group_mode not in _GROUP_MODES:
        raise ValueError(f"group_mode {group_mode!r}: use one of {', '.join(_GROUP_MODES)}")
    pandas = _pandas()
    rows = [
        {"task": task, "modality": modality, "count": _has_data(record, task, modality)}
        for task, modality in record._units()
    ]
    frame = pandas.DataFrame(rows, columns=list(_COUNT_COLUMNS))
    if groupby is None:
        return frame
    columns = [groupby] if isinstance(groupby, str) else list(groupby)
    grouped = frame.groupby(columns)["count"]
    counted = {"all": grouped.min, "any": grouped.max, "mean": grouped.mean}[group_mode]()
    return counted.reset_index().reindex([*columns, "count"], axis=1)


def count_detail(
    scope: ViewedScope, records: Iterable[ViewedRecord], groupby: str | list[str] | None
) -> pandas.DataFrame:
    """How many of ``records`` have data in each unit of ``scope`` (summed, sorted)."""
    pandas = _pandas()
    frames = [record_count_detail(record, groupby) for record in records]
    if not frames:
        rows = [{"task": t, "modality": m, "count": 0} for t, m in scope._units()]
        frames = [pandas.DataFrame(rows, columns=list(_COUNT_COLUMNS))]
    frame = pandas.concat(frames, ignore_index=True)
    keys = [column for column in frame.columns if column != "count"]
    return frame.groupby(keys)["count"].sum().reset_index()


def record_logs(dataset: ViewedDataset, records: Sequence[ViewedRecord]) -> pandas.DataFrame:
    """The status log lines of ``records`` (of their task and modality), newest first."""
    pandas = _pandas()
    lines: list[dict[str, Any]] = []
    for record in records:
        log = dataset._tree.status_log(dataset.store.local_root, record.id)
        lines.extend(
            line
            for line in read_status_log(log)
            if record.task in (None, line.get("task"))
            and record.modality in (None, line.get("modality"))
        )
    frame = pandas.DataFrame(lines)
    if frame.empty or "time" not in frame.columns:
        return frame
    return frame.sort_values("time", ascending=False, ignore_index=True)
