"""``XnatStore``: the blocking face of :class:`AsyncXnatStore` (FrameTree's RemoteStore).

The library's engine and FrameTree-style callers block; the connector itself is
async. Every method here runs the async store's coroutine through a portal
(see ``_xnat_loop``): the store's own background loop, or, with
:meth:`XnatStore.over`, a loop the caller runs (the daemon's), so that one
connection pool and one cache serve both.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..cache import Cache, EntryUse
from ..config import CacheSettings
from ._data_model import DataEntry, DataRow, DataTree, FileSet
from ._remote import RemoteStore
from ._store import FieldValue
from ._xnat_async import DEFAULT_SESSION_TYPE, AsyncXnatStore
from ._xnat_client import RetryPolicy, XnatClient
from ._xnat_loop import LoopThread, Portal
from ._xnat_names import SessionListing

if TYPE_CHECKING:
    from ..axes import Axes
    from ..config import Settings

__all__ = ["XnatStore"]


class XnatStore(RemoteStore):
    """A store over one project of an XNAT server (see :class:`AsyncXnatStore`).

    The constructor has the guide's RemoteStore arguments. ``cache_dir``
    defaults to :func:`sinagot.cache.resolve_cache_dir`; the password, when
    not given, comes from a systemd credential, ``$SINAGOT_XNAT_PASSWORD`` or
    ``~/.netrc``. Use it as a context manager, or call :meth:`close`, to end
    the server session and stop the store's thread.
    """

    def __init__(
        self,
        server: str,
        cache_dir: str | Path | None = None,
        name: str | None = None,
        user: str | None = None,
        password: str | None = None,
        race_condition_delay: float = 5.0,
        *,
        project: str,
        local_root: Path | None = None,
        max_connections: int = 8,
        concurrent_files: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        lock_timeout: float = 3600.0,
        session_xsi_type: str = DEFAULT_SESSION_TYPE,
        netrc_file: Path | None = None,
        password_credential: str | None = None,
    ) -> None:
        cache = Cache.from_settings(
            CacheSettings(
                dir=None if cache_dir is None else Path(cache_dir),
                race_condition_delay=race_condition_delay,
                lock_timeout=lock_timeout,
                concurrent_files=concurrent_files,
            )
        )
        store = AsyncXnatStore.connect(
            server,
            project=project,
            user=user,
            password=password,
            password_credential=password_credential,
            netrc_file=netrc_file,
            cache=cache,
            local_root=local_root,
            max_connections=max_connections,
            concurrent_files=concurrent_files,
            retry=retry,
            timeout=timeout,
            session_xsi_type=session_xsi_type,
        )
        self._bind(store, None, name)

    @classmethod
    def over(cls, store: AsyncXnatStore, portal: Portal | None = None) -> XnatStore:
        """The blocking face of ``store``; ``portal`` reaches the loop it runs on (default:
        a background loop of its own, stopped by :meth:`close`)."""
        blocking = cls.__new__(cls)
        blocking._bind(store, portal, None)
        return blocking

    @classmethod
    def from_settings(cls, settings: Settings) -> XnatStore:
        """The store of a ``[store] type = "xnat"`` config."""
        return cls.over(AsyncXnatStore.from_settings(settings))

    def _bind(self, store: AsyncXnatStore, portal: Portal | None, name: str | None) -> None:
        RemoteStore.__init__(
            self,
            store.server,
            store.cache.root,
            name or store.project,
            store.user,
            None,
            store.cache.race_condition_delay,
            local_root=store.local_root,
        )
        self.aio = store
        self.project = store.project
        self.cache = store.cache
        self._own_loop: LoopThread | None = None
        if portal is None:
            portal = self._own_loop = LoopThread(f"sinagot-xnat-{store.project}")
            # Closes the HTTP session and the thread even if the owner forgets to.
            weakref.finalize(self, _shutdown, self._own_loop, store)
        self._portal = portal

    def __repr__(self) -> str:
        return f"XnatStore({self.server!r}, project={self.project!r}, user={self.user!r})"

    def __enter__(self) -> XnatStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the server session and stop the store's own thread (it restarts on next use).

        A store made :meth:`over` a caller's loop leaves the async store to its owner.
        """
        if self._own_loop is not None:
            self._own_loop.close(self.aio.aclose())

    # -- connection and listing ---------------------------------------------------------

    def connect(self) -> XnatClient:
        self._portal.run(self.aio.login())
        return self.aio.client

    def disconnect(self, session: Any) -> None:
        del session  # the one client of this store is what connect returned
        self._portal.run(self.aio.aclose())

    def list_sessions(self) -> list[SessionListing]:
        """Every session of the project with its last modification time, in ONE request."""
        return self._portal.run(self.aio.list_sessions())

    def populate_tree(self, tree: DataTree) -> None:
        self._portal.run(self.aio.populate_tree(tree))

    def populate_row(self, row: DataRow) -> None:
        self._portal.run(self.aio.populate_row(row))

    def settle(self, row: DataRow) -> str | None:
        return self._portal.run(self.aio.settled_stamp(row.id))

    def forget_session(self, label: str) -> None:
        self.aio.forget_session(label)

    def create_data_tree(
        self,
        id: str,
        leaves: Sequence[tuple[str, ...]],
        hierarchy: Sequence[str],
        axes: type[Axes],
        **kwargs: Any,
    ) -> None:
        """Create one subject and one session per leaf (subject = first id, session = last)."""
        self._portal.run(self.aio.create_data_tree(id, leaves))

    def create_fileset_entry(self, path: str, row: DataRow) -> DataEntry:
        return self.aio.new_entry(path, row)

    def create_field_entry(self, path: str, row: DataRow) -> DataEntry:
        return self.aio.new_entry(path, row)

    # -- files, provenance, fields -------------------------------------------------------

    def download_files(self, entry: DataEntry, download_dir: Path) -> Path:
        return self._portal.run(self.aio.download_files(entry, download_dir))

    def entry_in_use(self, entry: DataEntry) -> EntryUse:
        return self.aio.entry_in_use(entry)

    def get_fileset(self, entry: DataEntry) -> FileSet:
        return self._portal.run(self.aio.get_fileset(entry))

    def upload_files(
        self, input_dir: Path, entry: DataEntry, names: Sequence[str] | None = None
    ) -> None:
        self._portal.run(self.aio.upload_files(Path(input_dir), entry, names))

    def get_checksums(self, uri: str) -> dict[str, str]:
        return self._portal.run(self.aio.get_checksums(uri))

    def put_fileset(self, fileset: FileSet, entry: DataEntry) -> FileSet:
        return self._portal.run(self.aio.put_fileset(fileset, entry))

    def get_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        return self._portal.run(self.aio.get_provenance(entry))

    def put_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        self._portal.run(self.aio.put_provenance(provenance, entry))

    def download_value(self, entry: DataEntry) -> FieldValue:
        return self._portal.run(self.aio.download_value(entry))

    def upload_value(self, value: FieldValue, entry: DataEntry) -> None:
        self._portal.run(self.aio.upload_value(value, entry))

    def save_frameset_definition(
        self, dataset_id: str, definition: dict[str, Any], name: str
    ) -> None:
        self._portal.run(self.aio.save_frameset_definition(dataset_id, definition, name))

    def load_frameset_definition(self, dataset_id: str, name: str) -> dict[str, Any] | None:
        return self._portal.run(self.aio.load_frameset_definition(dataset_id, name))


def _shutdown(loop: LoopThread, store: AsyncXnatStore) -> None:
    loop.close(store.aclose())
