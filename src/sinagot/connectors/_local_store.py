"""A store over a plain directory tree (FrameTree's ``LocalStore``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import atomic_copy, atomic_write_bytes
from .._layout import DERIVATIVES_DIR, PROVENANCE_DIR, list_files
from ..errors import RemoteNotFoundError, StoreError
from ._data_model import (
    DataEntry,
    DataRow,
    DataTree,
    FileSet,
    validate_label,
    validate_relative_path,
)
from ._store import FieldValue, Store

if TYPE_CHECKING:
    from ..axes import Axes

__all__ = ["LocalStore"]

_FIELDS_DIR = ".fields"
_DEFINITIONS_DIR = Path(".sinagot") / "definitions"


def _json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}): delete it to recompute it") from exc
    if not isinstance(document, dict):
        raise StoreError(f"{path} does not hold a JSON object: delete it to recompute it")
    return document


class LocalStore(Store):
    """Records are folders ``<root>/<id>/``; acquired data is ``<id>/<task>/<modality>/``.

    Derivatives are written under ``<id>/derivatives/`` with their provenance in
    ``<id>/derivatives/.provenance/<name@pipeline>.json``, which is written last
    and so marks the derivative as complete.
    """

    def __init__(self, root: Path, name: str | None = None) -> None:
        super().__init__(name)
        self._root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self._root)!r})"

    @property
    def local_root(self) -> Path:
        return self._root

    def _row_dir(self, row_id: str) -> Path:
        return self._root / validate_label(row_id, "record id")

    def _derivatives_dir(self, row_id: str) -> Path:
        return self._row_dir(row_id) / DERIVATIVES_DIR

    def _provenance_file(self, entry: DataEntry) -> Path:
        return self._derivatives_dir(entry.row_id) / PROVENANCE_DIR / f"{entry.path}.json"

    def _field_file(self, entry: DataEntry) -> Path:
        return self._derivatives_dir(entry.row_id) / _FIELDS_DIR / f"{entry.path}.json"

    def _primary_dir(self, entry: DataEntry) -> Path:
        task, _, modality = entry.path.partition("/")
        return self._row_dir(entry.row_id) / task / modality

    # -- structure -------------------------------------------------------

    def populate_tree(self, tree: DataTree) -> None:
        try:
            children = sorted(os.scandir(self._root), key=lambda e: e.name)
        except FileNotFoundError as exc:
            raise RemoteNotFoundError(
                f"dataset folder {self._root} does not exist: create it or fix [path] dataset"
            ) from exc
        for child in children:
            if child.is_dir() and not child.name.startswith("."):
                tree.add_leaf((child.name,))

    def populate_row(self, row: DataRow) -> None:
        row_dir = self._row_dir(row.id)
        try:
            tasks = sorted(os.scandir(row_dir), key=lambda e: e.name)
        except FileNotFoundError:
            # A record without a folder yet (a Sinagot 0.1 dataset's bookkeeping store).
            tasks = []
        for task in tasks:
            if not task.is_dir() or task.name.startswith(".") or task.name == DERIVATIVES_DIR:
                continue
            for modality in sorted(os.scandir(task.path), key=lambda e: e.name):
                if modality.is_dir() and not modality.name.startswith("."):
                    path = f"{task.name}/{modality.name}"
                    row.add_entry(path, uri=f"{row.id}/{path}")
        provenance_dir = self._derivatives_dir(row.id) / PROVENANCE_DIR
        if provenance_dir.is_dir():
            for item in sorted(os.scandir(provenance_dir), key=lambda e: e.name):
                if item.name.endswith(".json") and "@" in item.name:
                    path = item.name.removesuffix(".json")
                    row.add_entry(path, uri=f"{row.id}/{path}")

    def create_data_tree(
        self,
        id: str,
        leaves: Sequence[tuple[str, ...]],
        hierarchy: Sequence[str],
        axes: type[Axes],
        **kwargs: Any,
    ) -> None:
        for leaf in leaves:
            for part in leaf:
                validate_label(part, f"{hierarchy[0] if hierarchy else 'leaf'} id")
            self._row_dir("/".join(leaf)).mkdir(parents=True, exist_ok=True)

    def fileset_uri(self, path: str, row: DataRow) -> str:
        return f"{row.id}/{path}"

    def field_uri(self, path: str, row: DataRow) -> str:
        return f"{row.id}/{path}"

    def _new_derivative(self, path: str, row: DataRow, uri: str) -> DataEntry:
        if "@" not in path:
            raise StoreError(
                f"{path!r} is not a derivative path: outputs are named 'name@pipeline'"
                " so they can never overwrite acquired data"
            )
        name, _, pipeline = path.partition("@")
        validate_label(name, "derivative name")
        if pipeline:
            validate_label(pipeline, "pipeline name")
        return row.add_entry(path, uri=uri)

    def create_fileset_entry(self, path: str, row: DataRow) -> DataEntry:
        return self._new_derivative(path, row, self.fileset_uri(path, row))

    def create_field_entry(self, path: str, row: DataRow) -> DataEntry:
        return self._new_derivative(path, row, self.field_uri(path, row))

    # -- file-sets -------------------------------------------------------

    def get_fileset(self, entry: DataEntry) -> FileSet:
        if not entry.is_derivative:
            root = self._primary_dir(entry)
            return FileSet(root=root, names=list_files(root))
        provenance = self.get_fileset_provenance(entry)
        if provenance is None:
            raise RemoteNotFoundError(
                f"derivative {entry.path} of {entry.row_id} is not complete: run its script"
            )
        outputs = provenance.get("outputs", {})
        names = tuple(sorted(validate_relative_path(n, "output") for n in outputs))
        return FileSet(root=self._derivatives_dir(entry.row_id), names=names)

    def put_fileset(self, fileset: FileSet, entry: DataEntry) -> FileSet:
        if not entry.is_derivative:
            raise StoreError(
                f"refusing to write acquired data {entry.path} of {entry.row_id}:"
                " Sinagot only writes derivatives (name@pipeline)"
            )
        target = self._derivatives_dir(entry.row_id)
        for name in fileset.names:
            validate_relative_path(name, "output")
            source, destination = fileset.root / name, target / name
            if source.resolve() != destination.resolve():
                atomic_copy(source, destination)
        return FileSet(root=target, names=fileset.names)

    def get_fileset_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        return _read_json(self._provenance_file(entry))

    def put_fileset_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        atomic_write_bytes(self._provenance_file(entry), _json_bytes(provenance))

    # -- fields ----------------------------------------------------------

    def get_field(self, entry: DataEntry) -> FieldValue:
        document = _read_json(self._field_file(entry))
        if document is None or "value" not in document:
            raise RemoteNotFoundError(f"field {entry.path} of {entry.row_id} has no value yet")
        value: FieldValue = document["value"]
        return value

    def put_field(self, value: FieldValue, entry: DataEntry) -> None:
        document = _read_json(self._field_file(entry)) or {}
        document["value"] = value
        atomic_write_bytes(self._field_file(entry), _json_bytes(document))

    def get_field_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        document = _read_json(self._field_file(entry))
        provenance = None if document is None else document.get("provenance")
        return provenance if isinstance(provenance, dict) else None

    def put_field_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        document = _read_json(self._field_file(entry)) or {}
        document["provenance"] = provenance
        atomic_write_bytes(self._field_file(entry), _json_bytes(document))

    # -- frameset definitions ------------------------------------------------

    def _definition_file(self, name: str) -> Path:
        return self._root / _DEFINITIONS_DIR / f"{validate_label(name, 'definition name')}.json"

    def save_frameset_definition(
        self, dataset_id: str, definition: dict[str, Any], name: str
    ) -> None:
        atomic_write_bytes(self._definition_file(name), _json_bytes(definition))

    def load_frameset_definition(self, dataset_id: str, name: str) -> dict[str, Any] | None:
        return _read_json(self._definition_file(name))
