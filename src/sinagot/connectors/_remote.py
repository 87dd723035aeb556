"""The partial implementation for managed servers (FrameTree's ``RemoteStore``).

A remote store implements the guide's lower-level methods (connect,
download_files, upload_files, get/put_checksums, get/put_provenance, ...);
the field and provenance parts of the :class:`Store` interface are built on
them here. File-sets are the subclass's own: :class:`XnatStore` fetches and
sends them on its async core, which hard-links an entry's cached files into
the local work tree (:func:`link_entry`, where a :class:`LocalStore` would
have them) while it holds the entry in use, checks uploaded digests against
the server's (:func:`check_uploaded`) and writes provenance last, as the
commit of each derivative.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .._fs import link_or_copy, md5_file
from .._layout import DERIVATIVES_DIR, list_files
from ..errors import ServerError
from ._data_model import (
    DataEntry,
    DataRow,
    DataTree,
    FileSet,
    validate_label,
)
from ._store import FieldValue, Store

__all__ = [
    "RemoteStore",
    "check_uploaded",
    "checksums_of",
    "default_work_dir",
    "entry_work_dir",
    "link_entry",
]


def default_work_dir(server: str, dataset: str) -> Path:
    """Where scripts of a remote dataset run when no ``[path] dataset`` is configured."""
    parts = urlsplit(server)
    host = f"{parts.hostname or 'server'}-{parts.port or 0}"
    return Path(platformdirs.user_data_dir("sinagot")) / "work" / host / dataset


def checksums_of(fileset: FileSet) -> dict[str, str]:
    """MD5 of each file of ``fileset``: the known ones as given, the others read (blocking)."""
    return {
        name: fileset.checksums.get(name) or md5_file(fileset.root / name) for name in fileset.names
    }


def check_uploaded(
    server: str, what: str, local: Mapping[str, str], remote: Mapping[str, str]
) -> None:
    """Raise unless the server reports our digest for every uploaded file."""
    wrong = sorted(name for name, digest in local.items() if remote.get(name) != digest)
    if wrong:
        raise ServerError(
            f"{server} stored {', '.join(wrong)} of {what} with another checksum than"
            " the uploaded file: run the step again to upload it again"
        )


def entry_work_dir(local_root: Path, entry: DataEntry) -> Path:
    """Where the files of ``entry`` are seen in the work tree: the LocalStore layout."""
    row = local_root / validate_label(entry.row_id, "record id")
    if entry.is_derivative:
        return row / DERIVATIVES_DIR
    task, _, modality = entry.path.partition("/")
    return row / validate_label(task, "task") / validate_label(modality, "modality")


def link_entry(root: Path, destination: Path) -> tuple[str, ...]:
    """Link every file below ``root`` to the same name below ``destination``; return the names."""
    names = list_files(root)
    for name in names:
        link_or_copy(root / name, destination / name)
    return names


class RemoteStore(Store):
    """A store on a managed server; files are read through a local cache in ``cache_dir``.

    ``password`` is the guide's argument; a subclass authenticates its own way (the
    XNAT store hands it to its client), so none is kept here, and ``repr`` shows none.
    """

    def __init__(
        self,
        server: str,
        cache_dir: str | Path,
        name: str | None = None,
        user: str | None = None,
        password: str | None = None,
        race_condition_delay: float = 5.0,
        *,
        local_root: Path | None = None,
    ) -> None:
        super().__init__(name)
        self.server = server.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.user = user
        self.race_condition_delay = race_condition_delay
        self._local_root = (
            Path(local_root) if local_root else default_work_dir(self.server, name or "default")
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server!r}, name={self.name!r}, user={self.user!r})"

    @property
    def local_root(self) -> Path:
        return self._local_root

    # -- the guide's abstract methods ----------------------------------------------------

    def calculate_checksums(self, fileset: FileSet) -> dict[str, str]:
        """MD5 of each file of ``fileset``: the digest XNAT-like servers report."""
        return checksums_of(fileset)

    @abstractmethod
    def download_files(self, entry: DataEntry, download_dir: Path) -> Path:
        """Fetch the files of ``entry`` verified into the cache at ``download_dir``; their folder."""

    @abstractmethod
    def entry_in_use(self, entry: DataEntry) -> AbstractContextManager[object]:
        """Held while the files :meth:`download_files` returned for ``entry`` are read.

        The cache keeps those files in place until it is released (see
        :meth:`sinagot.cache.Cache.using`).
        """

    @abstractmethod
    def upload_files(
        self, input_dir: Path, entry: DataEntry, names: Sequence[str] | None = None
    ) -> None:
        """Upload ``names`` (default: every file) below ``input_dir`` as the files of ``entry``."""

    @abstractmethod
    def download_value(self, entry: DataEntry) -> FieldValue:
        """The value of field ``entry`` on the server."""

    @abstractmethod
    def upload_value(self, value: FieldValue, entry: DataEntry) -> None:
        """Store ``value`` as field ``entry`` on the server."""

    @abstractmethod
    def get_checksums(self, uri: str) -> dict[str, str]:
        """The server's digests of the files of the entry at ``uri``."""

    def put_checksums(self, uri: str, fileset: FileSet) -> dict[str, str]:
        """Check that the server computed the same digests as ours after an upload.

        XNAT computes digests itself, so there is nothing to send: this compares
        and raises :class:`ServerError` on any difference.
        """
        local = self.calculate_checksums(fileset)
        check_uploaded(self.server, uri, local, self.get_checksums(uri))
        return local

    @abstractmethod
    def get_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        """The provenance stored with ``entry``, or None if it has none (not complete)."""

    @abstractmethod
    def put_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        """Store provenance with ``entry``; written last, it marks the entry complete."""

    @abstractmethod
    def populate_tree(self, tree: DataTree) -> None: ...

    @abstractmethod
    def populate_row(self, row: DataRow) -> None: ...

    # -- the Store interface on top of them ----------------------------------------------

    def get_fileset_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        return self.get_provenance(entry)

    def put_fileset_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        self.put_provenance(provenance, entry)

    def get_field(self, entry: DataEntry) -> FieldValue:
        return self.download_value(entry)

    def put_field(self, value: FieldValue, entry: DataEntry) -> None:
        self.upload_value(value, entry)

    def get_field_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        return self.get_provenance(entry)

    def put_field_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        self.put_provenance(provenance, entry)
