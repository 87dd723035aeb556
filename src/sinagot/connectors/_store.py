"""The abstract storage interface (FrameTree's ``Store``), as Sinagot uses it.

The Dataset engine talks only to this interface, so a directory tree and an
XNAT server are interchangeable. Scripts always read and write real files
under :attr:`Store.local_root` (``<root>/<id>/<task>/<modality>/...`` for
acquired data, ``<root>/<id>/derivatives/...`` for outputs); a remote store
fills that tree from its cache and sends outputs back with ``put_fileset``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._data_model import DataEntry, DataRow, DataTree, FileSet

if TYPE_CHECKING:
    from ..axes import Axes

__all__ = ["FieldValue", "Store"]

FieldValue = float | int | str | list[float] | list[int] | list[str]


class Store(ABC):
    """Where a dataset's records, their data and their derivatives live."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    @property
    @abstractmethod
    def local_root(self) -> Path:
        """The local directory tree scripts read from and write to."""

    # -- connection ------------------------------------------------------

    def connect(self) -> Any:
        """Open a session with the store (nothing to do for local stores)."""
        return None

    def disconnect(self, session: Any) -> None:
        """Close what :meth:`connect` opened."""
        del session  # stores without sessions have nothing to close

    @contextmanager
    def connection(self) -> Iterator[Any]:
        session = self.connect()
        try:
            yield session
        finally:
            self.disconnect(session)

    # -- structure -------------------------------------------------------

    @abstractmethod
    def populate_tree(self, tree: DataTree) -> None:
        """Add one leaf per record, in a stable order."""

    @abstractmethod
    def populate_row(self, row: DataRow) -> None:
        """Add the row's primary entries ("task/modality") and derivatives ("name@pipeline")."""

    @abstractmethod
    def create_data_tree(
        self,
        id: str,
        leaves: Sequence[tuple[str, ...]],
        hierarchy: Sequence[str],
        axes: type[Axes],
        **kwargs: Any,
    ) -> None:
        """Create an empty dataset with the given leaves (used by tests and imports)."""

    @abstractmethod
    def create_fileset_entry(self, path: str, row: DataRow) -> DataEntry:
        """Declare a new (derivative) file-set entry in ``row``."""

    @abstractmethod
    def create_field_entry(self, path: str, row: DataRow) -> DataEntry:
        """Declare a new (derivative) field entry in ``row``."""

    # -- file-sets -------------------------------------------------------

    @abstractmethod
    def get_fileset(self, entry: DataEntry) -> FileSet:
        """Local, verified files of ``entry`` (downloaded first if remote)."""

    @abstractmethod
    def put_fileset(self, fileset: FileSet, entry: DataEntry) -> FileSet:
        """Store ``fileset`` as the content of ``entry``; returns it as stored."""

    @abstractmethod
    def get_fileset_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        """The provenance stored with ``entry``, or None if there is none."""

    @abstractmethod
    def put_fileset_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        """Store provenance with ``entry``; it marks the entry as complete."""

    # -- fields ----------------------------------------------------------

    @abstractmethod
    def get_field(self, entry: DataEntry) -> FieldValue:
        """The value of field ``entry``."""

    @abstractmethod
    def put_field(self, value: FieldValue, entry: DataEntry) -> None:
        """Store ``value`` as field ``entry``."""

    @abstractmethod
    def get_field_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        """The provenance stored with field ``entry``, or None."""

    @abstractmethod
    def put_field_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        """Store provenance with field ``entry``."""

    def settle(self, row: DataRow) -> str | None:
        """After this process stored derivatives of ``row``: the row's change marker now, if
        the store proves the data the run read unchanged since (so that its own uploads are
        not taken for a change of the record). None when it cannot tell (the default)."""
        del row
        return None

    # -- frameset definitions ------------------------------------------------

    @abstractmethod
    def save_frameset_definition(
        self, dataset_id: str, definition: dict[str, Any], name: str
    ) -> None:
        """Save a dataset definition (a JSON-able dict) inside the store."""

    @abstractmethod
    def load_frameset_definition(self, dataset_id: str, name: str) -> dict[str, Any] | None:
        """Load a definition saved by :meth:`save_frameset_definition`, or None."""
