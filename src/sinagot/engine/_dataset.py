"""The Python API: a Dataset, its Subsets (task / modality scopes) and its Records.

>>> ds = Dataset("sinagot.toml")
>>> ds.RS.EEG
<Subset instance | task: RS, modality: EEG>
>>> ds.get("REC-200331-A").run()          # doctest: +SKIP

It is Sinagot 0.1's API as well (``sinagot.models`` gives its import names):
``has``, ``count``, ``all``, ``tasks()``, ``modalities()``, ``steps``,
``count_detail()``, ``run(step_label, force)``, and the custom classes of a
modality (``[modalities.M] models.subset`` / ``models.record``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._ids import IdFilter
from .._report import RunReport
from ..config import Settings, load_settings
from ..connectors import DataTree, LocalStore, Store, open_store
from ..errors import ArgumentError, NotFoundError, RecordNotFoundError, ScopeError, ScriptError
from ._freeform import units_ids
from ._phases import RunHooks, run_scope, runner_for
from ._plan import Scope
from ._run import Progress
from ._scripts import load_user_class
from ._stepview import (
    StepCollection,
    count_detail,
    record_count_detail,
    record_logs,
    record_status_json,
)
from ._worktree import WorkTree, detect_layout, in_place_store_root

if TYPE_CHECKING:
    import pandas

__all__ = ["Dataset", "Record", "RecordCollection", "Subset"]

_log = logging.getLogger(__name__)


_S = TypeVar("_S", bound="_Scope")
# What a scope offers besides its task and modality scopes (said when a name is neither).
_API = [
    "ids",
    "get",
    "first",
    "all",
    "has",
    "count",
    "count_detail",
    "tasks",
    "modalities",
    "steps",
    "run",
]


def _ensure_log_output(level: str, log_format: str | None) -> None:
    # Interactive use shows the step log lines (as the README does) unless the
    # application has configured logging itself.
    package_logger = logging.getLogger("sinagot")
    package_logger.setLevel(level)
    if not package_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(log_format or "%(asctime)s : %(message)s"))
        package_logger.addHandler(handler)


class _Scope:
    """Shared behaviour of datasets, subsets and records: sub-scopes, steps and run().

    A subclass (Sinagot 0.1's custom models) may fix its ``task`` as a class attribute.
    """

    _kind = "Dataset"
    task: str | None = None
    modality: str | None = None

    def __init__(self, dataset: Dataset, task: str | None, modality: str | None) -> None:
        self._dataset = dataset
        self.task = task if task is not None else type(self).task
        self.modality = modality if modality is not None else type(self).modality

    # -- scopes ------------------------------------------------------------

    def _valid_scopes(self) -> list[str]:
        settings = self._dataset.settings
        if self.task is not None and self.modality is not None:
            return []
        if self.task is not None:
            return list(settings.tasks[self.task].modalities)
        tasks = [t.name for t in settings.tasks.values()]
        if self.modality is not None:
            return [t for t in tasks if self.modality in settings.tasks[t].modalities]
        modalities = {m for t in settings.tasks.values() for m in t.modalities}
        return tasks + [m for m in settings.modalities if m in modalities]

    def _scoped(self, task: str | None, modality: str | None) -> _Scope:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "settings" not in vars(self._dataset):
            raise AttributeError(name)
        valid = self._valid_scopes()
        if name not in valid:
            settings = self._dataset.settings
            choices = ", ".join(valid) if valid else "none (task and modality are both set)"
            neither = ""
            if name not in settings.tasks and name not in settings.modalities:
                neither = f"; nor is it a method (methods: {', '.join(self._api())})"
            raise ScopeError(f"{self!r} has no scope {name!r}; valid scopes: {choices}{neither}")
        if name in self._dataset.settings.tasks:
            return self._scoped(name, self.modality)
        return self._scoped(self.task, name)

    def _api(self) -> list[str]:
        return [name for name in _API if hasattr(type(self), name)]

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._valid_scopes()})

    @property
    def is_unit(self) -> bool:
        """Whether the scope has both a task and a modality."""
        return self.task is not None and self.modality is not None

    def _units(self) -> list[tuple[str, str]]:
        """The (task, modality) pairs of this scope, in config order."""
        settings = self._dataset.settings
        tasks = [self.task] if self.task is not None else list(settings.tasks)
        return [
            (task, modality)
            for task in tasks
            for modality in settings.modalities
            if modality in settings.tasks[task].modalities and self.modality in (None, modality)
        ]

    def tasks(self: _S) -> Iterator[_S]:
        """The scope of each task of this one (none once a task is set)."""
        if self.task is None:
            for task in self._dataset.settings.tasks:
                if task in self._valid_scopes():
                    yield getattr(self, task)

    def modalities(self: _S) -> Iterator[_S]:
        """The scope of each modality of this one (none once a modality is set)."""
        if self.modality is None:
            for modality in self._dataset.settings.modalities:
                if modality in self._valid_scopes():
                    yield getattr(self, modality)

    def iter_tasks(self: _S) -> Iterator[_S]:
        """Sinagot 0.1.4's name of :meth:`tasks`."""
        return self.tasks()

    def iter_modalities(self: _S) -> Iterator[_S]:
        """Sinagot 0.1.4's name of :meth:`modalities`."""
        return self.modalities()

    def units(self) -> Iterator[_Scope]:
        """The scope of each (task, modality) pair of this one."""
        for task, modality in self._units():
            yield self._scoped(task, modality)

    def _scope_records(self) -> list[Record]:
        """The records of this scope (a record: itself)."""
        raise NotImplementedError

    @property
    def steps(self) -> StepCollection:
        """The steps (scripts) of this scope: ``get``, ``first``, ``status()``, ``run()``."""
        return StepCollection(self)

    def status(self) -> pandas.DataFrame:
        """The status of each step (Sinagot 0.1's ``Scope.status()``): ``steps.status()``."""
        return self.steps.status()

    # -- running -------------------------------------------------------------

    def _records(self, listed: Mapping[str, str | None]) -> tuple[str, ...]:
        """The records of this scope among those ``listed`` (id -> change marker)."""
        return tuple(listed)

    def _script_names(self) -> list[str]:
        settings = self._dataset.settings
        names: dict[str, None] = {}
        for task, modality in self._units():
            names.update(dict.fromkeys(settings.modalities[modality].scripts_for(task)))
        return list(names)

    def run(
        self,
        step_label: str | None = None,
        force: bool = False,
        debug: bool = False,
        *,
        mode: str | None = None,
        progress: Progress | None = None,
        hooks: RunHooks | None = None,
    ) -> RunReport:
        """Run every script of this scope that is not up to date; ``force`` reruns all.

        ``step_label`` (Sinagot 0.1's first argument) runs only that script: the steps it
        reads from are checked, not run. ``debug`` raises the first failure as a
        ScriptError. ``mode`` overrides the config's ``[run] mode`` ("main_process" or
        "dask"); ``progress(done, total)`` is called after each step; ``hooks`` hear of
        each phase of the run (see :class:`sinagot.engine.RunHooks`).
        """
        if step_label is not None and not isinstance(step_label, str):
            raise ArgumentError(
                f"run({step_label!r}): the first argument is a step label (Sinagot 0.1's"
                " run(step_label, force)); use run(force=True) to rerun everything"
            )
        if step_label is not None and step_label not in self._script_names():
            scripts = ", ".join(self._script_names()) or "none"
            raise NotFoundError(f"{self!r} has no step {step_label!r}; its steps: {scripts}")
        if progress is not None:
            hooks = dataclasses.replace(hooks or RunHooks(), progress=progress)
        report = self._dataset._run(
            self._records,
            self.task,
            self.modality,
            step_label,
            force=force,
            mode=mode,
            hooks=hooks,
        )
        if debug and report.errors:
            step, error = next(iter(report.errors.items()))
            raise ScriptError(f"{step}: {error}")
        return report


class _RecordSource(_Scope):
    """Scopes that hold several records: ids(), get(), first(), all(), has(), count()."""

    def ids(self) -> list[str]:
        """The record ids, in the order the store lists them (in a local Sinagot 0.1
        dataset: those with data in this scope, found as 0.1 did)."""
        return self._dataset._scope_ids(self._units())

    def _record_class(self) -> type[Record]:
        if self.modality is None:
            return Record
        return self._dataset._model_class("record", self.modality, Record)

    def get(self, id: str) -> Record:
        if id not in self._dataset._list_ids():
            raise RecordNotFoundError(
                f"no record {id!r} in {self._dataset.settings.config_path}:"
                " use one of ds.ids() (`sinagot ids CONFIG`)"
            )
        return self._record_class()(self._dataset, id, self.task, self.modality)

    def first(self) -> Record:
        ids = self.ids()
        if not ids:
            raise RecordNotFoundError(
                f"the dataset of {self._dataset.settings.config_path} has no record matching"
                f" [records] id_pattern {self._dataset.settings.id_pattern.pattern!r}"
                f"{'' if self is self._dataset else f' in {self!r}'}: add data or fix the pattern"
            )
        return self._record_class()(self._dataset, ids[0], self.task, self.modality)

    def all(self) -> Iterator[Record]:
        """Every record of this scope."""
        record_class = self._record_class()
        for id in self.ids():
            yield record_class(self._dataset, id, self.task, self.modality)

    def _scope_records(self) -> list[Record]:
        return list(self.all())

    def has(self, id: str) -> bool:
        """Whether record ``id`` is in this scope."""
        return id in self.ids()

    def count(self) -> int:
        """The number of records in this scope."""
        return len(self.ids())

    def count_detail(self, groupby: str | list[str] | None = None) -> pandas.DataFrame:
        """How many records have data in each task and modality (a DataFrame)."""
        return count_detail(self, self.all(), groupby)

    def logs(self) -> pandas.DataFrame:
        """The status log lines of every record of this scope, newest first."""
        return record_logs(self._dataset, list(self.all()))

    def _records(self, listed: Mapping[str, str | None]) -> tuple[str, ...]:
        if not self._dataset._tree.in_place or self is self._dataset:
            return tuple(listed)
        mine = set(self.ids())
        return tuple(id for id in listed if id in mine)

    def __repr__(self) -> str:
        return f"<{self._kind} instance | task: {self.task}, modality: {self.modality}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _RecordSource) or isinstance(other, Dataset) != isinstance(
            self, Dataset
        ):
            return NotImplemented
        return (self._dataset.settings.config_path, self.task, self.modality) == (
            other._dataset.settings.config_path,
            other.task,
            other.modality,
        )

    def __hash__(self) -> int:
        return hash((self._dataset.settings.config_path, self.task, self.modality))


class Dataset(_RecordSource):
    """A dataset described by a TOML config file (see :mod:`sinagot.config`).

    ``config``: the config file, a folder holding ``dataset.toml`` (Sinagot 0.1), or
    loaded Settings; ``data_path`` replaces ``[path] dataset``; ``store`` replaces the
    store the config describes (e.g. one already connected, shared by a service).
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Settings,
        data_path: str | os.PathLike[str] | None = None,
        *,
        store: Store | None = None,
    ) -> None:
        if isinstance(config, Settings):
            settings = config
            if data_path is not None:
                settings = dataclasses.replace(settings, dataset_dir=Path(data_path).resolve())
        else:
            settings = load_settings(config, dataset_dir=data_path)
        super().__init__(self, None, None)
        self.settings = settings
        self._store = store
        self._ids = IdFilter(
            settings.id_pattern,
            settings.config_path.stem,
            "folder" if settings.store.type == "local" else "session",
        )
        _ensure_log_output(settings.log_level, settings.log_format)
        for note in settings.notes:
            _log.info("note: %s", note)
        self._freeform, why = detect_layout(settings)
        # A local 0.1 dataset is its own work tree, unless a store was given.
        self._in_place = self._freeform and settings.store.type == "local" and store is None
        if self._freeform:
            _log.info(
                "%s: Sinagot 0.1's free-form layout (%s): outputs go where PATH_OUT says",
                settings.config_path,
                why,
            )

    @property
    def store(self) -> Store:
        if self._store is None:
            if self._in_place:
                root = in_place_store_root(self._tree.root)
                self._store = LocalStore(root, name=self.settings.config_path.stem)
            else:
                self._store = open_store(self.settings)
        return self._store

    @cached_property
    def _tree(self) -> WorkTree:
        """Where the scripts read and write, and in which layout."""
        if self._in_place:
            assert self.settings.dataset_dir is not None  # a local store's config has one
            return WorkTree(self.settings.dataset_dir, freeform=True, in_place=True)
        return WorkTree(self.store.local_root, self._freeform)

    @property
    def config(self) -> dict[str, Any]:
        """The config as written (Sinagot 0.1's ``Dataset.config``): a copy."""
        return copy.deepcopy(dict(self.settings.document))

    @property
    def data_path(self) -> Path:
        """The folder where the scripts read and write (``[path] dataset``)."""
        return self._tree.root

    @property
    def scripts_path(self) -> Path:
        """The folder of the scripts (``[path] scripts``)."""
        return self.settings.scripts_dir

    @property
    def records(self) -> RecordCollection:
        """All the records (Sinagot 0.1.4's ``Dataset.records``)."""
        return RecordCollection(self, None, None)

    def _scoped(self, task: str | None, modality: str | None) -> RecordCollection:
        return RecordCollection._in(self, task, modality)

    def _model_class(self, kind: str, modality: str, base: type[_S]) -> type[_S]:
        """The modality's custom class of ``kind`` ("subset", "record"), else ``base``."""
        name = self.settings.modalities[modality].models.get(kind)
        if name is None:
            return base
        file = self.settings.scripts_dir / modality / "models" / f"{kind}.py"
        return load_user_class(file, name, base)

    def _scope_ids(self, units: list[tuple[str, str]]) -> list[str]:
        if self._tree.in_place:
            return units_ids(self.settings, self._tree.root, units)
        return self._list_ids()

    def _list_ids(self) -> list[str]:
        return list(self._listing())

    def _listing(self) -> dict[str, str | None]:
        """The records in the store's order, each with its change marker (one listing)."""
        if self._tree.in_place:
            return dict.fromkeys(units_ids(self.settings, self._tree.root, self._units()))
        tree = DataTree()
        self.store.populate_tree(tree)
        listed = {row.id: row.last_modified for row in tree if self._ids.accept(row.id)}
        self._ids.report(_log)
        return listed

    def _run(
        self,
        records: Callable[[Mapping[str, str | None]], tuple[str, ...]],
        task: str | None,
        modality: str | None,
        script: str | None,
        *,
        force: bool,
        mode: str | None,
        hooks: RunHooks | None,
    ) -> RunReport:
        if mode not in (None, "main_process", "dask"):
            raise ValueError(f"mode {mode!r}: use 'main_process' or 'dask'")
        with self.store.connection():
            listed = self._listing()
            outcome = run_scope(
                self.settings,
                self.store,
                Scope(records=records(listed), task=task, modality=modality, script=script),
                runner=runner_for(self.settings, mode),
                force=force,
                hooks=hooks,
                listed=listed,
                tree=self._tree,
            )
        return outcome.report


class RecordCollection(_RecordSource):
    """The records of a dataset restricted to a task, a modality, or both (a unit).

    ``Subset`` is its other name (Sinagot 0.1.3's); a modality's custom class
    (``[modalities.M] models.subset``) subclasses it.
    """

    _kind = "Subset"

    @classmethod
    def _in(cls, dataset: Dataset, task: str | None, modality: str | None) -> RecordCollection:
        """The scope of ``task`` and ``modality``: the modality's custom class, if any."""
        if modality is None:
            return RecordCollection(dataset, task, modality)
        return dataset._model_class("subset", modality, RecordCollection)(dataset, task, modality)

    def _scoped(self, task: str | None, modality: str | None) -> RecordCollection:
        return RecordCollection._in(self._dataset, task, modality)

    def __repr__(self) -> str:
        kind = self._kind if type(self) is RecordCollection else type(self).__name__
        return f"<{kind} instance | task: {self.task}, modality: {self.modality}>"


Subset = RecordCollection


class Record(_Scope):
    """One record (recording session), optionally restricted to a task and/or modality."""

    _kind = "Record"

    def __init__(
        self, dataset: Dataset, id: str, task: str | None = None, modality: str | None = None
    ) -> None:
        super().__init__(dataset, task, modality)
        self.id = id

    def _scoped(self, task: str | None, modality: str | None) -> Record:
        cls = Record if modality is None else self._dataset._model_class("record", modality, Record)
        return cls(self._dataset, self.id, task, modality)

    def _scope_records(self) -> list[Record]:
        return [self]

    def _records(self, listed: Mapping[str, str | None]) -> tuple[str, ...]:
        if self.id not in listed:
            raise RecordNotFoundError(
                f"no record {self.id!r} in {self._dataset.settings.config_path} any more:"
                " use one of ds.ids() (`sinagot ids CONFIG`)"
            )
        return (self.id,)

    def count_detail(
        self, groupby: str | list[str] | None = None, group_mode: str = "all"
    ) -> pandas.DataFrame:
        """Whether the record has data (1) or not (0) in each task and modality; grouped by
        ``groupby`` columns, ``group_mode`` "all", "any" or "mean" says how."""
        return record_count_detail(self, groupby, group_mode)

    def logs(self) -> pandas.DataFrame:
        """The record's status log lines (of this task and modality), newest first."""
        return record_logs(self._dataset, [self])

    @property
    def subset(self) -> RecordCollection:
        """The records of the same task and modality as this one (Sinagot 0.1.3's)."""
        return RecordCollection._in(self._dataset, self.task, self.modality)

    def exists(self) -> bool:
        """Whether the record has data in this scope."""
        return self.subset.has(self.id)

    def status_json(self) -> str:
        """The status of each step as JSON, by task and modality (for web pages)."""
        return record_status_json(self)

    def __repr__(self) -> str:
        kind = self._kind if type(self) is Record else type(self).__name__
        return f"<{kind} instance | id: {self.id}, task: {self.task}, modality: {self.modality}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self._dataset.settings.config_path, self.id, self.task, self.modality) == (
            other._dataset.settings.config_path,
            other.id,
            other.task,
            other.modality,
        )

    def __hash__(self) -> int:
        return hash((self._dataset.settings.config_path, self.id, self.task, self.modality))
