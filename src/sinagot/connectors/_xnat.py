"""``XnatStore``: a project of an XNAT(-compatible) server as a Sinagot dataset.

Sessions (experiments) are records; a scan's type is the task and the label
of a scan resource the modality. Derivatives ``name@pipeline`` are session
resources labelled ``name___at___pipeline`` (frametree-xnat's form, since
XNAT labels may not hold ``@``), holding the outputs and, written last as
the commit, ``provenance.json``: a resource without it is incomplete and
is redone. Fields are experiment custom fields; frameset definitions are
files of a project resource.

Everything runs on the store's own event loop (see ``_xnat_loop``): the
synchronous methods of the Store interface wait for it, and the ``a``-prefixed
coroutines (``alist_sessions``, ``apopulate_row``, ...) serve callers running
their own loop, such as the daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import quote, unquote

from .._fs import md5_file
from ..cache import Cache, EntryKey, EntryUse, RemoteFile, resolve_cache_dir
from ..config import CacheSettings
from ..errors import (
    ConfigError,
    RemoteNotFoundError,
    RequestRefusedError,
    ServerError,
    StoreError,
)
from ._local import _list_files
from ._remote import RemoteStore, check_uploaded, default_work_dir, link_entry
from ._store import FieldValue
from ._values import (
    DataEntry,
    DataRow,
    DataTree,
    FileSet,
    derivative_path,
    split_derivative_path,
    validate_label,
    validate_relative_path,
)
from ._xnat_client import RetryPolicy, XnatClient
from ._xnat_credentials import resolve_credentials
from ._xnat_loop import LoopThread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..axes import Axes
    from ..config import Settings

__all__ = ["PROVENANCE_FILE", "SessionListing", "XnatStore", "resource_label"]

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
DEFINITIONS_RESOURCE = "sinagot_framesets"
_AT = "___at___"
T = TypeVar("T")
# Local MD5s remembered by (path, size, mtime_ns): outputs are hashed once per upload.
_MD5_MEMO_SIZE = 10_000
_EXPERIMENT_COLUMNS = "ID,label,xsiType,last_modified,insert_date"
_FILE_IN_URI = re.compile(r"/scans/([^/]+)/resources/([^/]+)/files/")
_FILE_PATH = re.compile(r"/resources/[^/]+/files/(.+)$")
_UPLOAD_PARAMS = MappingProxyType({"overwrite": "true", "inbody": "true"})


def resource_label(path: str) -> str:
    """The XNAT resource label of derivative ``name@pipeline`` (``name___at___pipeline``)."""
    name, pipeline = split_derivative_path(path)
    return f"{name}{_AT}{pipeline}"


def _q(segment: str) -> str:
    return quote(segment, safe="")


class SessionListing(NamedTuple):
    """One session of a project listing: its label and the server's modification time."""

    label: str
    last_modified: str


@dataclass(frozen=True, slots=True)
class _Session:
    id: str
    xsi_type: str
    last_modified: str


class _EntrySource:
    """The cache's view of one entry's files on the server (a ``FileSource``)."""

    supports_range = True

    def __init__(self, client: XnatClient, base: str, what: str) -> None:
        self._client = client
        self._base = base
        self._what = what

    def stream(self, file: RemoteFile, offset: int) -> AsyncIterator[bytes]:
        path = f"{self._base}/files/{quote(file.name, safe='/')}"
        return self._client.stream(path, offset, f"file {file.name} of {self._what}")


def _file_name(uri: str, fallback: str) -> str:
    """The path of a file inside its resource, from its listing URI (Name is only the basename)."""
    match = _FILE_PATH.search(uri)
    name = unquote(match.group(1)) if match else fallback
    return validate_relative_path(name, "file name from the server")


def _remote_file(row: Mapping[str, str], name: str, what: str) -> RemoteFile:
    try:
        size = int(row.get("Size") or 0)
    except ValueError:
        raise ServerError(
            f"the server lists {name} of {what} with size {row.get('Size')!r}"
        ) from None
    return RemoteFile(name=name, size=size, digest=row.get("digest", ""))


def _scan_resource_uri(session: str, scan: str, label: str) -> str:
    return f"{session}/scans/{_q(scan)}/resources/{_q(label)}"


def _by_uri(
    session: str, files: Mapping[tuple[str, str], Sequence[RemoteFile]]
) -> dict[str, tuple[RemoteFile, ...]]:
    return {
        _scan_resource_uri(session, scan, label): tuple(listed)
        for (scan, label), listed in files.items()
    }


def _same_files(
    before: Mapping[str, Sequence[RemoteFile]], after: Mapping[str, Sequence[RemoteFile]]
) -> bool:
    """Whether two scan-file listings prove the same content (every file has a digest)."""

    def proof(listing: Mapping[str, Sequence[RemoteFile]]) -> dict[str, set[RemoteFile]] | None:
        if any(not f.digest for files in listing.values() for f in files):
            return None
        return {uri: set(files) for uri, files in listing.items() if files}

    known = proof(before)
    return known is not None and known == proof(after)


def _decode_value(text: str) -> FieldValue:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, int | float | str | list):
        return value
    return text


async def _together(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``coros`` as tasks of one group; the first failure cancels the rest and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as errors:
        first = errors.exceptions[0]
        for error in errors.exceptions:
            if not isinstance(error, asyncio.CancelledError):
                first = error
                break
        raise first from None
    return [task.result() for task in tasks]


class XnatStore(RemoteStore):
    """A store over one project of an XNAT server (see the module docstring).

    ``cache_dir`` defaults to :func:`sinagot.cache.resolve_cache_dir`; the
    password, when not given, comes from ``$SINAGOT_XNAT_PASSWORD`` or
    ``~/.netrc``. Use it as a context manager, or call :meth:`close`, to
    end the server session and stop the store's thread.
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
        session_xsi_type: str = "xnat:mrSessionData",
        netrc_file: Path | None = None,
        password_credential: str | None = None,
    ) -> None:
        validate_label(project, "[store] project")
        credentials = resolve_credentials(
            server, user, password, credential=password_credential, netrc_file=netrc_file
        )
        super().__init__(
            server,
            cache_dir if cache_dir is not None else resolve_cache_dir(None),
            name or project,
            credentials.user,
            credentials.password,
            race_condition_delay,
            local_root=local_root or default_work_dir(server, project),
        )
        self.project = project
        self.concurrent_files = concurrent_files
        self.session_xsi_type = session_xsi_type
        self.cache = Cache.from_settings(
            CacheSettings(
                dir=self.cache_dir,
                race_condition_delay=race_condition_delay,
                lock_timeout=lock_timeout,
                concurrent_files=concurrent_files,
            )
        )
        self._client = XnatClient(
            self.server,
            credentials,
            project=project,
            max_connections=max_connections,
            retry=retry,
            timeout=timeout,
        )
        self._loop = LoopThread(f"sinagot-xnat-{project}")
        # Scan-file listings learnt by populate_row, by session label then resource URI:
        # sizes and digests for the cache and for asettled_stamp. A long-running daemon
        # drops a session's with forget_session once its job ends, so this stays small.
        self._listings: dict[str, dict[str, tuple[RemoteFile, ...]]] = {}
        self._sessions: dict[str, _Session] = {}
        self._md5_memo: dict[tuple[str, int, int], str] = {}
        self._all_files_listing = True
        # Closes the HTTP session and the thread even if the owner forgets to.
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._client)

    @classmethod
    def from_settings(cls, settings: Settings) -> XnatStore:
        """The store of a ``[store] type = "xnat"`` config."""
        store = settings.store
        if not store.server or not store.project:
            raise ConfigError(
                f"{settings.config_path}: [store] needs server and project for type 'xnat'"
            )
        return cls(
            store.server,
            resolve_cache_dir(store.cache.dir),
            name=store.project,
            user=store.user,
            password=store.password,
            password_credential=store.password_credential,
            race_condition_delay=store.race_condition_delay,
            project=store.project,
            local_root=settings.dataset_dir,
            max_connections=store.max_connections,
            concurrent_files=store.concurrent_files,
        )

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
        """End the server session and stop the store's thread (it restarts on next use)."""
        self._loop.close(self._client.aclose())

    async def aclose(self) -> None:
        """End the server session from a coroutine; the thread stops with :meth:`close`."""
        await self._loop.run_async(self._client.aclose())

    # -- paths ---------------------------------------------------------------------------

    def _project_path(self, project: str | None = None) -> str:
        return f"/data/projects/{_q(project or self.project)}"

    def _session_path(self, label: str) -> str:
        return f"{self._project_path()}/experiments/{_q(validate_label(label, 'session label'))}"

    def _entry_key(self, entry: DataEntry) -> EntryKey:
        prefix = self._session_path(entry.row_id) + "/"
        if not entry.uri.startswith(prefix):
            raise StoreError(f"entry {entry.path} of {entry.row_id} has a foreign URI {entry.uri}")
        return EntryKey(self.server, self.project, entry.row_id, unquote(entry.uri[len(prefix) :]))

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> XnatClient:
        self._loop.run(self._client.login())
        return self._client

    def disconnect(self, session: Any) -> None:
        del session  # the one client of this store is what connect returned
        self._loop.run(self._client.aclose())

    # -- listing -------------------------------------------------------------------------

    async def _list_sessions(self) -> list[SessionListing]:
        rows = await self._client.list_rows(
            f"{self._project_path()}/experiments",
            f"project {self.project}",
            {"columns": _EXPERIMENT_COLUMNS},
        )
        sessions: list[SessionListing] = []
        # Rebuilt from each listing: sessions deleted on the server are not kept.
        known: dict[str, _Session] = {}
        for row in rows:
            label = row.get("label", "")
            try:
                validate_label(label, "session label")
            except StoreError as exc:
                logger.warning("ignoring a session of project %s: %s", self.project, exc)
                continue
            modified = row.get("last_modified") or row.get("insert_date", "")
            known[label] = _Session(row.get("ID", label), row.get("xsiType", ""), modified)
            sessions.append(SessionListing(label, modified))
        self._sessions = known
        sessions.sort()
        return sessions

    async def alist_sessions(self) -> list[SessionListing]:
        """Every session of the project with its last modification time, in ONE request."""
        return await self._loop.run_async(self._list_sessions())

    def list_sessions(self) -> list[SessionListing]:
        return self._loop.run(self._list_sessions())

    async def _populate_tree(self, tree: DataTree) -> None:
        for session in await self._list_sessions():
            tree.add_leaf((session.label,), last_modified=session.last_modified)

    def populate_tree(self, tree: DataTree) -> None:
        self._loop.run(self._populate_tree(tree))

    async def apopulate_tree(self, tree: DataTree) -> None:
        await self._loop.run_async(self._populate_tree(tree))

    async def _scan_files(
        self, session: str, scan_ids: Sequence[str]
    ) -> dict[tuple[str, str], list[RemoteFile]]:
        """Files of every scan resource, by (scan id, resource label): one listing if possible."""
        what = f"the scan files of session {session}"
        grouped: dict[tuple[str, str], list[RemoteFile]] = {}
        rows = None
        if self._all_files_listing:
            try:
                rows = await self._client.list_rows(f"{session}/scans/ALL/files", what)
            except (RemoteNotFoundError, RequestRefusedError):
                # A server without the one-request listing: remember, list per resource.
                logger.info("%s cannot list all scan files at once", self.server)
                self._all_files_listing = False
        if rows is not None:
            for row in rows:
                match = _FILE_IN_URI.search(row.get("URI", ""))
                if match is None:
                    raise ServerError(f"the listing of {what} has a file without a scan URI")
                scan, resource = unquote(match.group(1)), unquote(match.group(2))
                label = row.get("collection") or resource
                name = _file_name(row["URI"], row.get("Name", ""))
                grouped.setdefault((scan, label), []).append(_remote_file(row, name, what))
            return grouped

        async def resources_of(scan: str) -> list[tuple[str, str]]:
            listed = await self._client.list_rows(
                f"{session}/scans/{_q(scan)}/resources", f"resources of scan {scan}"
            )
            return [(scan, r.get("label", "")) for r in listed]

        async def files_of(scan: str, label: str) -> None:
            listed = await self._client.list_rows(
                f"{session}/scans/{_q(scan)}/resources/{_q(label)}/files",
                f"resource {label} of scan {scan}",
            )
            grouped[(scan, label)] = [
                _remote_file(r, _file_name(r.get("URI", ""), r.get("Name", "")), what)
                for r in listed
            ]

        # Independent listings: send them together (the pool bounds the connections).
        per_scan = await _together([resources_of(scan) for scan in scan_ids])
        await _together([files_of(scan, label) for pairs in per_scan for scan, label in pairs])
        return grouped

    async def _populate_row(self, row: DataRow) -> None:
        session = self._session_path(row.id)
        # The session must exist for either listing: its 404 names the session.
        scans, resources = await _together(
            [
                self._client.list_rows(f"{session}/scans", f"session {row.id}"),
                self._client.list_rows(f"{session}/resources", f"session {row.id}"),
            ]
        )
        types = {s.get("ID", ""): s.get("type", "") for s in scans}
        files = await self._scan_files(session, list(types))
        self._listings[row.id] = _by_uri(session, files)
        for (scan, label), listed in sorted(files.items()):
            task = types.get(scan)
            if not task:
                logger.warning("session %s: scan %s has no type; ignoring it", row.id, scan)
                continue
            try:
                path = (
                    f"{validate_label(task, 'scan type')}/{validate_label(label, 'resource label')}"
                )
            except StoreError as exc:
                logger.warning("session %s: ignoring scan %s: %s", row.id, scan, exc)
                continue
            if path in row.entries:
                logger.warning("session %s: several %s scans; using the first", row.id, task)
                continue
            row.add_entry(
                path,
                uri=_scan_resource_uri(session, scan, label),
                checksums={f.name: f.digest for f in listed},
                last_modified=row.last_modified,
            )
        for resource in resources:
            label = resource.get("label", "")
            name, sep, pipeline = label.partition(_AT)
            if not sep:
                continue
            try:
                path = derivative_path(name, pipeline)
            except StoreError as exc:
                logger.warning("session %s: ignoring resource %r: %s", row.id, label, exc)
                continue
            row.add_entry(path, uri=f"{session}/resources/{_q(label)}")

    def populate_row(self, row: DataRow) -> None:
        self._loop.run(self._populate_row(row))

    async def apopulate_row(self, row: DataRow) -> None:
        await self._loop.run_async(self._populate_row(row))

    async def _session_stamp(self, label: str) -> str | None:
        # XNAT filters a listing on a column's value (``*`` as a wildcard, hence the exact
        # match below): one row instead of the whole project.
        rows = await self._client.list_rows(
            f"{self._project_path()}/experiments",
            f"session {label}",
            {"columns": _EXPERIMENT_COLUMNS, "label": label},
        )
        for row in rows:
            if row.get("label") == label:
                return row.get("last_modified") or row.get("insert_date") or None
        return None

    async def _settled_stamp(self, label: str) -> str | None:
        listed = self._listings.get(label)
        if listed is None:
            return None
        # The stamp first: any change after this request moves the stamp past it,
        # and a change of scan files before it shows in the listing below.
        stamp = await self._session_stamp(label)
        if stamp is None:
            return None
        session = self._session_path(label)
        scan_ids: list[str] = []
        if not self._all_files_listing:
            scans = await self._client.list_rows(f"{session}/scans", f"session {label}")
            scan_ids = [s.get("ID", "") for s in scans]
        current = _by_uri(session, await self._scan_files(session, scan_ids))
        return stamp if _same_files(listed, current) else None

    async def asettled_stamp(self, label: str) -> str | None:
        """The session's ``last_modified`` now, if its scan files are unchanged.

        Unchanged means: the same files with the same digests as when
        :meth:`apopulate_row` last listed session ``label``. A caller that
        processed those files and uploaded its results can take the session as
        processed up to this stamp, its own uploads included. None when a scan
        file changed, was added or removed (or the server lists no digests).
        Costs two requests: the session's row of the project listing, then its
        scan files in one listing where the server offers it.
        """
        return await self._loop.run_async(self._settled_stamp(label))

    def forget_session(self, label: str) -> None:
        """Drop the listings :meth:`populate_row` remembered for session ``label``.

        Later downloads of its files list them again. A long-running caller
        (the daemon) calls this when it is done with a session, so memory does
        not grow with every session it ever processed.
        """
        # One dict operation, atomic under the GIL: safe from any thread.
        self._listings.pop(label, None)

    # -- creating --------------------------------------------------------------------------

    async def _create_data_tree(self, id: str, leaves: Sequence[tuple[str, ...]]) -> None:
        project = self._project_path(validate_label(id, "project id"))
        for leaf in leaves:
            subject, session = (validate_label(part, "leaf id") for part in (leaf[0], leaf[-1]))
            subject_path = f"{project}/subjects/{_q(subject)}"
            await self._client.request(
                "PUT", subject_path, f"project {id}", params={"xsiType": "xnat:subjectData"}
            )
            await self._client.request(
                "PUT",
                f"{subject_path}/experiments/{_q(session)}",
                f"subject {subject}",
                params={"xsiType": self.session_xsi_type},
            )

    def create_data_tree(
        self,
        id: str,
        leaves: Sequence[tuple[str, ...]],
        hierarchy: Sequence[str],
        axes: type[Axes],
        **kwargs: Any,
    ) -> None:
        """Create one subject and one session per leaf (subject = first id, session = last)."""
        self._loop.run(self._create_data_tree(id, leaves))

    def _new_entry(self, path: str, row: DataRow) -> DataEntry:
        try:
            name, pipeline = split_derivative_path(path)
        except ValueError:
            raise StoreError(
                f"{path!r} is not a derivative path: outputs are named 'name@pipeline'"
                " so they can never overwrite acquired data"
            ) from None
        derivative_path(name, pipeline)  # validates both parts
        uri = f"{self._session_path(row.id)}/resources/{_q(resource_label(path))}"
        return row.add_entry(path, uri=uri)

    def create_fileset_entry(self, path: str, row: DataRow) -> DataEntry:
        return self._new_entry(path, row)

    def create_field_entry(self, path: str, row: DataRow) -> DataEntry:
        return self._new_entry(path, row)

    # -- files ---------------------------------------------------------------------------

    async def _list_entry(self, uri: str, what: str) -> dict[str, RemoteFile]:
        rows = await self._client.list_rows(f"{uri}/files", what)
        files = [
            _remote_file(r, _file_name(r.get("URI", ""), r.get("Name", "")), what) for r in rows
        ]
        return {f.name: f for f in files}

    async def _download_files(self, entry: DataEntry, download_dir: Path) -> Path:
        what = f"{entry.path} of session {entry.row_id}"
        key = self._entry_key(entry)
        listed = self._listings.get(entry.row_id, {}).get(entry.uri)
        if listed is None:
            listed = tuple((await self._list_entry(entry.uri, what)).values())
        if entry.is_derivative:
            listed = tuple(f for f in listed if f.name != PROVENANCE_FILE)
        cache = self.cache
        if Path(download_dir) != self.cache_dir:
            cache = Cache.from_settings(dataclasses.replace(cache.settings, dir=Path(download_dir)))
        # Digests alone decide freshness: our own uploads bump the session's
        # last_modified and must not make cached scans look stale.
        return await cache.fetch(key, listed, _EntrySource(self._client, entry.uri, what))

    def download_files(self, entry: DataEntry, download_dir: Path) -> Path:
        return self._loop.run(self._download_files(entry, download_dir))

    async def adownload_files(self, entry: DataEntry, download_dir: Path | None = None) -> Path:
        return await self._loop.run_async(
            self._download_files(entry, download_dir or self.cache_dir)
        )

    def entry_in_use(self, entry: DataEntry) -> EntryUse:
        return self.cache.using(self._entry_key(entry))

    async def aget_fileset(self, entry: DataEntry) -> FileSet:
        """:meth:`get_fileset` for callers running their own event loop."""
        destination = self.work_dir(entry)
        async with self.entry_in_use(entry):
            root = await self.adownload_files(entry)
            names = await asyncio.to_thread(link_entry, root, destination)
        return FileSet(root=destination, names=names)

    def _md5(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        digest = self._md5_memo.get(key)
        if digest is None:
            if len(self._md5_memo) >= _MD5_MEMO_SIZE:
                self._md5_memo.clear()  # a long-running daemon must not grow without bound
            digest = self._md5_memo[key] = md5_file(path)
        return digest

    def calculate_checksums(self, fileset: FileSet) -> dict[str, str]:
        return {name: self._md5(fileset.root / name) for name in fileset.names}

    async def _upload_files(
        self, input_dir: Path, entry: DataEntry, names: Sequence[str] | None
    ) -> None:
        if not entry.is_derivative:
            raise StoreError(
                f"refusing to upload into acquired data {entry.path} of {entry.row_id}:"
                " Sinagot only writes derivatives (name@pipeline)"
            )
        what = f"{entry.path} of session {entry.row_id}"
        if names is None:
            names = await asyncio.to_thread(_list_files, input_dir)
        for name in names:
            validate_relative_path(name, "output")
            if name == PROVENANCE_FILE:
                raise StoreError(
                    f"output {name} of {what} clashes with the provenance file: rename the output"
                )
        try:
            remote = await self._list_entry(entry.uri, what)
        except RemoteNotFoundError:
            # Created once up front: parallel first uploads could each create one.
            await self._client.request("PUT", entry.uri, f"resource of {what}")
            remote = {}
        files = f"{entry.uri}/files"
        if PROVENANCE_FILE in remote:
            # Un-commit first, so an interrupted re-upload never looks complete.
            await self._client.request("DELETE", f"{files}/{PROVENANCE_FILE}", what)
        local = {name: await asyncio.to_thread(self._md5, input_dir / name) for name in names}
        slots = asyncio.Semaphore(self.concurrent_files)

        async def put(name: str) -> None:
            async with slots:
                await self._client.request(
                    "PUT",
                    f"{files}/{quote(name, safe='/')}",
                    f"file {name} of {what}",
                    params=_UPLOAD_PARAMS,
                    body=input_dir / name,
                )

        async def delete(name: str) -> None:
            async with slots:
                await self._client.request(
                    "DELETE", f"{files}/{quote(name, safe='/')}", f"file {name} of {what}"
                )

        changed = [n for n in local if remote.get(n) is None or remote[n].digest != local[n]]
        stale = [n for n in remote if n not in local and n != PROVENANCE_FILE]
        logger.info(
            "uploading %d of %d files of %s (%d stale removed)",
            len(changed),
            len(local),
            what,
            len(stale),
        )
        await _together([*(put(n) for n in changed), *(delete(n) for n in stale)])

    def upload_files(
        self, input_dir: Path, entry: DataEntry, names: Sequence[str] | None = None
    ) -> None:
        self._loop.run(self._upload_files(Path(input_dir), entry, names))

    async def _get_checksums(self, uri: str) -> dict[str, str]:
        listed = await self._list_entry(uri, f"resource {unquote(uri.rsplit('/', 1)[-1])}")
        return {n: f.digest for n, f in listed.items() if n != PROVENANCE_FILE}

    def get_checksums(self, uri: str) -> dict[str, str]:
        return self._loop.run(self._get_checksums(uri))

    async def _put_fileset(self, fileset: FileSet, entry: DataEntry) -> FileSet:
        await self._upload_files(fileset.root, entry, fileset.names)
        local = await asyncio.to_thread(self.calculate_checksums, fileset)
        check_uploaded(self.server, entry.uri, local, await self._get_checksums(entry.uri))
        return fileset

    async def aput_fileset(self, fileset: FileSet, entry: DataEntry) -> FileSet:
        return await self._loop.run_async(self._put_fileset(fileset, entry))

    # -- provenance ------------------------------------------------------------------------

    async def _get_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        what = f"provenance of {entry.path} of session {entry.row_id}"
        try:
            data = await self._client.request("GET", f"{entry.uri}/files/{PROVENANCE_FILE}", what)
        except RemoteNotFoundError:
            return None
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            logger.warning("%s is not a JSON object; the step will run again", what)
            return None
        return document

    def get_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        return self._loop.run(self._get_provenance(entry))

    async def aget_fileset_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        return await self._loop.run_async(self._get_provenance(entry))

    async def _put_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        body = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
        await self._client.request(
            "PUT",
            f"{entry.uri}/files/{PROVENANCE_FILE}",
            f"provenance of {entry.path} of session {entry.row_id}",
            params=_UPLOAD_PARAMS,
            body=body,
        )

    def put_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        self._loop.run(self._put_provenance(provenance, entry))

    async def aput_fileset_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        await self._loop.run_async(self._put_provenance(provenance, entry))

    # -- fields ----------------------------------------------------------------------------

    async def _session_document(self, label: str) -> dict[str, Any]:
        document = await self._client.get_json(self._session_path(label), f"session {label}")
        try:
            item = document["items"][0]
        except (KeyError, IndexError, TypeError):
            item = None
        if not isinstance(item, dict):
            raise ServerError(f"the description of session {label} has no items: check the server")
        return item

    async def _download_value(self, entry: DataEntry) -> FieldValue:
        wanted = resource_label(entry.path).lower()
        item = await self._session_document(entry.row_id)
        for child in item.get("children", []):
            if not isinstance(child, dict) or child.get("field") != "fields/field":
                continue
            for field_item in child.get("items", []):
                fields = field_item.get("data_fields", {}) if isinstance(field_item, dict) else {}
                if str(fields.get("name", "")).lower() == wanted:
                    return _decode_value(str(fields.get("field", "")))
        raise RemoteNotFoundError(f"field {entry.path} of session {entry.row_id} has no value yet")

    def download_value(self, entry: DataEntry) -> FieldValue:
        return self._loop.run(self._download_value(entry))

    async def _upload_value(self, value: FieldValue, entry: DataEntry) -> None:
        session = self._sessions.get(entry.row_id)
        xsi_type = session.xsi_type if session is not None and session.xsi_type else ""
        if not xsi_type:
            item = await self._session_document(entry.row_id)
            xsi_type = str(item.get("meta", {}).get("xsi:type", "")) or self.session_xsi_type
        field = resource_label(entry.path)
        await self._client.request(
            "PUT",
            self._session_path(entry.row_id),
            f"session {entry.row_id}",
            params={
                "xsiType": xsi_type,
                f"{xsi_type}/fields/field[name={field}]/field": json.dumps(value),
            },
        )

    def upload_value(self, value: FieldValue, entry: DataEntry) -> None:
        self._loop.run(self._upload_value(value, entry))

    # -- frameset definitions ------------------------------------------------------------------

    def _definition_path(self, dataset_id: str, name: str) -> str:
        project = self._project_path(validate_label(dataset_id, "project id"))
        file = _q(validate_label(name, "definition name") + ".json")
        return f"{project}/resources/{DEFINITIONS_RESOURCE}/files/{file}"

    def save_frameset_definition(
        self, dataset_id: str, definition: dict[str, Any], name: str
    ) -> None:
        body = (json.dumps(definition, indent=2, sort_keys=True) + "\n").encode()
        self._loop.run(
            self._client.request(
                "PUT",
                self._definition_path(dataset_id, name),
                f"definition {name} of project {dataset_id}",
                params=_UPLOAD_PARAMS,
                body=body,
            )
        )

    async def _load_definition(self, dataset_id: str, name: str) -> dict[str, Any] | None:
        try:
            data = await self._client.request(
                "GET",
                self._definition_path(dataset_id, name),
                f"definition {name} of project {dataset_id}",
            )
        except RemoteNotFoundError:
            return None
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ServerError(
                f"definition {name} of project {dataset_id} is not a JSON object: save it again"
            )
        return document

    def load_frameset_definition(self, dataset_id: str, name: str) -> dict[str, Any] | None:
        return self._loop.run(self._load_definition(dataset_id, name))


def _shutdown(loop: LoopThread, client: XnatClient) -> None:
    loop.close(client.aclose())
