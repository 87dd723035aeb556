"""Small value types shared by every store: entries, rows, trees and file-sets.

Names follow the FrameTree storage interface. A row is one record (an XNAT
session); an entry is one item of data in a row: a primary entry
``"<task>/<modality>"`` (acquired data) or a derivative entry
``"<name>@<pipeline>"`` (something a script produced). The two namespaces
never overlap because only derivative paths contain ``@``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._names import check_length
from ..errors import UnsafeNameError

__all__ = [
    "DataEntry",
    "DataRow",
    "DataTree",
    "FileSet",
    "derivative_path",
    "split_derivative_path",
    "validate_label",
    "validate_relative_path",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})

# XNAT labels allow letters, digits, '_' and '-'; we also allow '.' inside a
# name (file-like labels) but never a leading dot, so nothing hides or climbs.
_LABEL = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_SHORTER = "use a shorter name"


def validate_label(label: str, what: str) -> str:
    """Return ``label`` if it is safe as a single path component, else raise."""
    if not _LABEL.fullmatch(label):
        raise UnsafeNameError(
            f"{what} {label!r} is not a safe name: use letters, digits, '_', '-' or '.'"
            " (no path separators, no leading dot)"
        )
    check_length(label, what, _SHORTER)
    return label


def validate_relative_path(name: str, what: str) -> str:
    """Return ``name`` if it is a relative POSIX path staying inside its folder."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise UnsafeNameError(f"{what} {name!r} is not a safe relative path")
    # Split by hand: PurePosixPath drops "." and empty parts, so "a/./b" would pass as "a/b",
    # one file under two names (the cache refuses those).
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeNameError(f"{what} {name!r} is not a safe relative path")
    check_length(name, what, _SHORTER)
    return name


def derivative_path(name: str, pipeline: str) -> str:
    """The entry path of derivative ``name`` made by ``pipeline`` ("name@pipeline")."""
    validate_label(name, "derivative name")
    if pipeline:
        validate_label(pipeline, "pipeline name")
    return f"{name}@{pipeline}"


def split_derivative_path(path: str) -> tuple[str, str]:
    """Split "name@pipeline" into its parts; raise for a primary path."""
    name, sep, pipeline = path.partition("@")
    if not sep:
        raise ValueError(f"{path!r} is not a derivative path (name@pipeline)")
    return name, pipeline


@dataclass(frozen=True, slots=True)
class DataEntry:
    """One item of data in a row, as the store knows it (no local files implied).

    ``checksums`` maps file names (relative POSIX paths) to MD5 hex digests
    when the store knows them without reading the data (e.g. XNAT listings).
    ``last_modified`` is the store's change marker for the entry, if any.
    """

    row_id: str
    path: str
    uri: str
    checksums: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    last_modified: str | None = None

    @property
    def is_derivative(self) -> bool:
        return "@" in self.path


@dataclass(slots=True)
class DataRow:
    """A record and its entries, filled in by :meth:`Store.populate_row`."""

    id: str
    last_modified: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, DataEntry] = field(default_factory=dict)

    def add_entry(
        self,
        path: str,
        uri: str,
        checksums: Mapping[str, str] | None = None,
        last_modified: str | None = None,
    ) -> DataEntry:
        entry = DataEntry(
            row_id=self.id,
            path=path,
            uri=uri,
            checksums=MappingProxyType(dict(checksums)) if checksums else _EMPTY,
            last_modified=last_modified,
        )
        self.entries[path] = entry
        return entry

    def entry(self, path: str) -> DataEntry | None:
        return self.entries.get(path)


@dataclass(slots=True)
class DataTree:
    """The rows of a dataset in the order the store listed them."""

    rows: dict[str, DataRow] = field(default_factory=dict)

    def add_leaf(self, ids: tuple[str, ...], last_modified: str | None = None) -> DataRow:
        # Sinagot datasets have one level (record); deeper hierarchies join their ids.
        row_id = "/".join(ids)
        row = DataRow(id=row_id, last_modified=last_modified)
        self.rows[row_id] = row
        return row

    def __iter__(self) -> Iterator[DataRow]:
        return iter(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True, slots=True)
class FileSet:
    """Files on local disk: ``names`` are relative POSIX paths under ``root``.

    ``checksums``: their MD5s when the caller already knows them (a step hashed
    its outputs as it wrote them), so that storing them does not read them again.
    ``folder``: the folder (below ``root``) that a remote store holds the names relative
    to (None: the folder of them all, see ``output_prefix``).
    """

    root: Path
    names: tuple[str, ...]
    checksums: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    folder: str | None = None

    def paths(self) -> Iterator[Path]:
        for name in self.names:
            yield self.root / name
