"""The fetch phase of a run: everything a record's steps need from the store, once.

For each selected step: the acquired-data entries its inputs live in (each
fetched and linked into the work tree once per run, whatever the number of
steps reading it), the provenance stored with its derivative (a pending one,
when results wait for their upload, wins), and, for a step others read, its
outputs in the work tree. Nothing after this phase talks to the store until
results are published.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .._fs import link_or_copy
from .._layout import derivatives_dir
from .._report import StepKey
from ..connectors import DataEntry, DataRow, FileSet, Store, derivative_path
from ..errors import SinagotError, StoreError
from ._plan import FetchedRecord, RecordPlan
from ._publish import read_pending_provenance
from ._steps import remove_dead_staging
from ._worktree import WorkTree

__all__ = ["fetch_record"]

_log = logging.getLogger("sinagot.run")


def _materialize(fileset: FileSet, destination: Path) -> None:
    """Make the files of ``fileset`` visible under ``destination`` (no-op if already there)."""
    # Cheap path comparison first: this runs for every entry of every record.
    if fileset.root == destination or (
        destination.is_dir() and os.path.samefile(fileset.root, destination)
    ):
        return
    for name in fileset.names:
        link_or_copy(fileset.root / name, destination / name)


def _stored_provenance(
    store: Store, row: DataRow, path: str, *, use_pending: bool
) -> dict[str, Any] | None:
    if use_pending:
        # Newer than what the store holds: its outputs wait in the work tree.
        pending = read_pending_provenance(store.local_root, row.id, path)
        if pending is not None:
            return pending
    entry = row.entry(path)
    return None if entry is None else store.get_fileset_provenance(entry)


def _ensure_outputs(
    store: Store,
    tree: WorkTree,
    row: DataRow,
    key: StepKey,
    path: str,
    provenance: dict[str, Any],
) -> str | None:
    """Bring a finished step's outputs into the work tree; why it is stale, if so."""
    outputs = tree.root / tree.output_prefix(row.id)
    names = list(provenance.get("outputs", {}))
    if all((outputs / name).is_file() for name in names):
        return None
    entry = row.entry(path)
    if entry is not None and not tree.in_place:
        try:
            # Free-form: from the store's copy to where the step wrote its outputs.
            _materialize(store.get_fileset(entry), outputs)
        except StoreError as exc:
            _log.warning("cannot fetch the outputs of %s: %s", key, exc)
    if all((outputs / name).is_file() for name in names):
        return None
    return "outputs missing"


def _place(fileset: FileSet, entry: DataEntry, root: Path, local_path: str) -> dict[str, str]:
    """Link the last component of ``local_path`` (a file or a folder) from ``fileset`` to
    ``local_path`` in the work tree at ``root``, where a free-form PATH_IN says. The
    server's digests of what was placed, by local path."""
    item = local_path.rpartition("/")[2]
    placed: dict[str, str] = {}
    for name in fileset.names:
        if name != item and not name.startswith(f"{item}/"):
            continue
        target = local_path + name[len(item) :]
        if fileset.root / name != root / target:
            link_or_copy(fileset.root / name, root / target)
        if name in entry.checksums:
            placed[target] = entry.checksums[name]
    return placed


def fetch_record(
    store: Store,
    tree: WorkTree,
    row: DataRow,
    plan: RecordPlan,
    *,
    pipeline: str,
    use_pending: bool,
) -> FetchedRecord:
    """Fetch what the steps of ``plan`` need; failures are kept for the steps they concern."""
    fetched = FetchedRecord()
    root = tree.root
    remove_dead_staging(derivatives_dir(store.local_root, row.id))
    filesets: dict[str, FileSet] = {}
    for step in plan.steps:
        if step.error is not None or step.script is None:
            continue
        produced = step.produced_inputs(plan.by_key)
        for local_path in step.inputs:
            entry_path = tree.primary_entry(step.key, local_path)
            if (
                local_path in produced
                or entry_path is None
                or entry_path in fetched.entry_errors
                or (entry_path in fetched.primary and not tree.freeform)
            ):
                continue
            entry = row.entry(entry_path)
            if entry is None:
                fetched.primary[entry_path] = None
                continue
            try:
                if tree.freeform:
                    if entry_path not in filesets:
                        filesets[entry_path] = store.get_fileset(entry)
                    placed = _place(filesets[entry_path], entry, root, local_path)
                    known = fetched.primary.get(entry_path) or {}
                    fetched.primary[entry_path] = {**known, **placed}
                    continue
                _materialize(store.get_fileset(entry), root / row.id / entry_path)
            except (SinagotError, OSError) as exc:
                fetched.entry_errors[entry_path] = str(exc)
                continue
            prefix = f"{row.id}/{entry_path}/"
            fetched.primary[entry_path] = {prefix + n: md5 for n, md5 in entry.checksums.items()}
        path = derivative_path(step.key.name, pipeline)
        try:
            stored = _stored_provenance(store, row, path, use_pending=use_pending)
            fetched.provenance[step.key] = stored
            if stored is not None and step.key in plan.has_dependents:
                stale = _ensure_outputs(store, tree, row, step.key, path, stored)
                if stale is not None:
                    fetched.stale[step.key] = stale
        except (SinagotError, OSError) as exc:
            fetched.step_errors[step.key] = str(exc)
    return fetched
