"""Publishing results: a finished step's outputs, then (last) its provenance, to the store.

A run either stores each finished step at once, or (for the daemon, whose upload
is a phase of its own) leaves it *pending*: outputs in the work tree plus
``derivatives/.pending/<name@pipeline>.json`` holding the provenance to publish
and the size and mtime of each output when the step hashed it. A later run takes
a pending provenance as the stored one, so a crash between running and uploading
never reruns a script whose inputs did not change; :func:`publish_pending`
uploads them. Outputs are hashed once, by the step that wrote them: publishing
reads a file again only if its size or mtime moved since.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._fs import atomic_write_bytes, fsync_dir, md5_file
from .._layout import PENDING_DIR, derivatives_dir, pending_file
from .._report import StepResult, StepStatus
from ..connectors import DataRow, FileSet, Store, derivative_path
from ..errors import SinagotError
from ._worktree import WorkTree

__all__ = ["Publication", "commit_result", "publish_pending", "read_pending_provenance"]

_log = logging.getLogger("sinagot.run")


@dataclass(frozen=True, slots=True)
class Publication:
    """What :func:`publish_pending` did for one record (derivative paths ``name@pipeline``)."""

    uploaded: tuple[str, ...] = ()
    already_stored: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def _read_pending(file: Path) -> dict[str, Any] | None:
    """A pending publication ``{"path": ..., "provenance": {...}}``, or None if absent or bad."""
    try:
        document = json.loads(file.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        _log.warning("ignoring the unreadable pending publication %s", file)
        return None
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("path"), str)
        or not isinstance(document.get("provenance"), dict)
    ):
        _log.warning("ignoring the malformed pending publication %s", file)
        return None
    return document


def read_pending_provenance(root: Path, record: str, path: str) -> dict[str, Any] | None:
    """The provenance of derivative ``path`` of ``record`` waiting for its upload, if any."""
    document = _read_pending(pending_file(root, record, path))
    if document is None:
        return None
    provenance: dict[str, Any] = document["provenance"]
    return provenance


def _drop_pending(file: Path) -> None:
    try:
        file.unlink()
    except FileNotFoundError:
        return
    fsync_dir(file.parent)


def _stat(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def _outputs_root(tree: WorkTree, record: str) -> Path:
    """The folder a record's derivative output names are relative to, in the work tree."""
    return tree.root / tree.output_prefix(record)


def _store_derivative(
    store: Store,
    tree: WorkTree,
    row: DataRow,
    path: str,
    outputs: Mapping[str, str],
    provenance: dict[str, Any],
) -> None:
    """Upload a derivative's outputs (their MD5s known) then, last, its provenance.

    A local 0.1 dataset's outputs are where its scripts wrote them: only the provenance
    is stored.
    """
    entry = row.entry(path) or store.create_fileset_entry(path, row)
    if not tree.in_place:
        folder = provenance.get("folder")
        fileset = FileSet(
            root=_outputs_root(tree, row.id),
            names=tuple(sorted(outputs)),
            checksums=MappingProxyType(dict(outputs)),
            folder=folder if isinstance(folder, str) else None,
        )
        store.put_fileset(fileset, entry)
    store.put_fileset_provenance(provenance, entry)


def commit_result(
    store: Store,
    rows: Mapping[str, DataRow],
    pipeline: str,
    result: StepResult,
    *,
    defer: bool,
    tree: WorkTree | None = None,
) -> StepResult:
    """Store a finished (or adopted) step, or (``defer``) record it as pending publication.

    ``tree``: the run's work tree (default: the records layout in the store's tree)."""
    tree = tree or WorkTree(store.local_root)
    if result.status not in (StepStatus.RAN, StepStatus.UP_TO_DATE) or result.provenance is None:
        return result
    row = rows[result.key.record]
    path = derivative_path(result.key.name, pipeline)
    pending = pending_file(store.local_root, row.id, path)
    try:
        if defer:
            root = _outputs_root(tree, row.id)
            document = {
                "path": path,
                "provenance": result.provenance,
                "stat": {name: _stat(root / name) for name in result.outputs},
            }
            atomic_write_bytes(pending, json.dumps(document, sort_keys=True).encode())
        else:
            _store_derivative(store, tree, row, path, result.outputs, result.provenance)
            # An older pending result of this step is superseded by what was just stored.
            _drop_pending(pending)
    except (SinagotError, OSError) as exc:
        error = f"storing outputs failed: {exc}"
        _log.error("Step %s: %s", result.key, error)
        return replace(result, status=StepStatus.FAILED, error=error)
    return result


def _unchanged(output: Path, md5: str, stat: Any) -> bool:
    """Whether ``output`` still holds what was hashed to ``md5`` (read only if it moved)."""
    try:
        if isinstance(stat, list) and _stat(output) == stat:
            return True
        return output.is_file() and md5_file(output) == md5
    except OSError:
        return False


def _check_pending(root: Path, file: Path) -> tuple[str, dict[str, Any]] | str:
    """The derivative path and provenance of a pending result, or why it cannot be published."""
    document = _read_pending(file)
    if document is None:
        return f"{file} is not a pending publication: it was dropped, the step reruns"
    path: str = document["path"]
    provenance: dict[str, Any] = document["provenance"]
    outputs = provenance.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return f"{file} lists no outputs: it was dropped, the step reruns"
    stats = document.get("stat")
    stats = stats if isinstance(stats, dict) else {}
    for name, md5 in outputs.items():
        if not _unchanged(root / name, md5, stats.get(name)):
            return (
                f"output {name} of {path} changed in the work tree {root} before its upload:"
                " the pending result was dropped, the step reruns"
            )
    return path, provenance


def _pending_files(root: Path, record: str) -> Iterable[Path]:
    folder = derivatives_dir(root, record) / PENDING_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else ()


def publish_pending(store: Store, row: DataRow, *, tree: WorkTree | None = None) -> Publication:
    """Upload the pending results of ``row`` (see the module docstring), provenance last.

    ``row`` must be populated from the store. A pending result whose outputs no
    longer match its provenance is dropped (the next run reruns the step) and
    reported in ``errors``, as are failed uploads (kept pending, to try again);
    a result the store already holds is not uploaded again.
    """
    tree = tree or WorkTree(store.local_root)
    uploaded: list[str] = []
    already: list[str] = []
    errors: list[str] = []
    root = _outputs_root(tree, row.id)
    for file in _pending_files(store.local_root, row.id):
        checked = _check_pending(root, file)
        if isinstance(checked, str):
            _drop_pending(file)
            errors.append(checked)
            continue
        path, provenance = checked
        try:
            entry = row.entry(path)
            if entry is not None and store.get_fileset_provenance(entry) == provenance:
                # Uploaded before a crash that came before the pending file was removed.
                already.append(path)
            else:
                _store_derivative(store, tree, row, path, provenance["outputs"], provenance)
                uploaded.append(path)
        except (SinagotError, OSError) as exc:
            errors.append(f"uploading {path} of {row.id} failed: {exc}")
            continue
        _drop_pending(file)
        _log.info("%s: %s %s", row.id, "published" if path in uploaded else "already stored", path)
    return Publication(tuple(uploaded), tuple(already), tuple(errors))
