"""The Python API: a Dataset, its Subsets (task / modality scopes) and its Records.

>>> ds = Dataset("sinagot.toml")
>>> ds.RS.EEG
<Subset instance | task: RS, modality: EEG>
>>> ds.get("REC-200331-A").run()          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ._ids import IdFilter
from ._report import RunReport
from .config import Settings, load_settings
from .connectors import DataTree, Store, open_store
from .engine import Progress, RunHooks, Scope, run_scope, runner_for
from .errors import RecordNotFoundError, ScopeError

__all__ = ["Dataset", "Record", "Subset"]

_log = logging.getLogger(__name__)


def _ensure_log_output(level: str) -> None:
    # Interactive use shows the step log lines (as the README does) unless the
    # application has configured logging itself.
    package_logger = logging.getLogger("sinagot")
    package_logger.setLevel(level)
    if not package_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s : %(message)s"))
        package_logger.addHandler(handler)


class _Scope:
    """Shared behaviour of datasets, subsets and records: sub-scopes and run()."""

    _kind = "Dataset"

    def __init__(self, dataset: Dataset, task: str | None, modality: str | None) -> None:
        self._dataset = dataset
        self.task = task
        self.modality = modality

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
            choices = ", ".join(valid) if valid else "none (task and modality are both set)"
            raise ScopeError(f"{self!r} has no scope {name!r}; valid scopes: {choices}")
        if name in self._dataset.settings.tasks:
            return self._scoped(name, self.modality)
        return self._scoped(self.task, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._valid_scopes()})

    # -- running -------------------------------------------------------------

    def _records(self, listed: Mapping[str, str | None]) -> tuple[str, ...]:
        """The records of this scope among those ``listed`` (id -> change marker)."""
        return tuple(listed)

    def run(
        self,
        force: bool = False,
        *,
        mode: str | None = None,
        progress: Progress | None = None,
        hooks: RunHooks | None = None,
    ) -> RunReport:
        """Run every script of this scope that is not up to date; ``force`` reruns all.

        ``mode`` overrides the config's ``[run] mode`` ("main_process" or "dask");
        ``progress(done, total)`` is called after each step; ``hooks`` hear of each
        phase of the run (see :class:`sinagot.engine.RunHooks`).
        """
        if progress is not None:
            hooks = dataclasses.replace(hooks or RunHooks(), progress=progress)
        return self._dataset._run(
            self._records, self.task, self.modality, force=force, mode=mode, hooks=hooks
        )


class _RecordSource(_Scope):
    """Scopes that hold several records: ids(), get() and first()."""

    def ids(self) -> list[str]:
        """The record ids, in the order the store lists them."""
        return self._dataset._list_ids()

    def get(self, id: str) -> Record:
        if id not in self._dataset._list_ids():
            raise RecordNotFoundError(
                f"no record {id!r} in {self._dataset.settings.config_path}:"
                " use one of ds.ids() (`sinagot ids CONFIG`)"
            )
        return Record(self._dataset, id, self.task, self.modality)

    def first(self) -> Record:
        ids = self._dataset._list_ids()
        if not ids:
            raise RecordNotFoundError(
                f"the dataset of {self._dataset.settings.config_path} has no record matching"
                f" [records] id_pattern {self._dataset.settings.id_pattern.pattern!r}: add data"
                " or fix the pattern"
            )
        return Record(self._dataset, ids[0], self.task, self.modality)

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
    """A dataset described by a TOML config file (see :mod:`sinagot.config`)."""

    def __init__(
        self, config: str | os.PathLike[str] | Settings, *, store: Store | None = None
    ) -> None:
        """``config`` is a config file path (or loaded Settings); ``store`` replaces the
        store the config describes (e.g. one already connected, shared by a service)."""
        settings = config if isinstance(config, Settings) else load_settings(config)
        super().__init__(self, None, None)
        self.settings = settings
        self._store = store
        self._ids = IdFilter(
            settings.id_pattern,
            settings.config_path.stem,
            "folder" if settings.store.type == "local" else "session",
        )
        _ensure_log_output(settings.log_level)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def _scoped(self, task: str | None, modality: str | None) -> Subset:
        return Subset(self, task, modality)

    def _list_ids(self) -> list[str]:
        return list(self._listing())

    def _listing(self) -> dict[str, str | None]:
        """The records in the store's order, each with its change marker (one listing)."""
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
                Scope(records=records(listed), task=task, modality=modality),
                runner=runner_for(self.settings, mode),
                force=force,
                hooks=hooks,
                listed=listed,
            )
        return outcome.report


class Subset(_RecordSource):
    """The records of a dataset restricted to a task, a modality, or both (a unit)."""

    _kind = "Subset"

    def _scoped(self, task: str | None, modality: str | None) -> Subset:
        return Subset(self._dataset, task, modality)


class Record(_Scope):
    """One record (recording session), optionally restricted to a task and/or modality."""

    _kind = "Record"

    def __init__(
        self, dataset: Dataset, id: str, task: str | None = None, modality: str | None = None
    ) -> None:
        super().__init__(dataset, task, modality)
        self.id = id

    def _scoped(self, task: str | None, modality: str | None) -> Record:
        return Record(self._dataset, self.id, task, modality)

    def _records(self, listed: Mapping[str, str | None]) -> tuple[str, ...]:
        if self.id not in listed:
            raise RecordNotFoundError(
                f"no record {self.id!r} in {self._dataset.settings.config_path} any more:"
                " use one of ds.ids() (`sinagot ids CONFIG`)"
            )
        return (self.id,)

    def __repr__(self) -> str:
        return f"<Record instance | id: {self.id}, task: {self.task}, modality: {self.modality}>"

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
