"""``AsyncXnatStore``: a project of an XNAT(-compatible) server, for callers on an event loop.

This is the XNAT connector itself; :class:`~sinagot.connectors.XnatStore` is
the blocking adapter over it that the library's engine uses (FrameTree's
``RemoteStore`` interface). Sessions (experiments) are records; a scan's type
is the task and the label of a scan resource the modality. Derivatives
``name@pipeline`` are session resources labelled ``name___at___pipeline``
(frametree-xnat's form, since XNAT labels may not hold ``@``), holding the
outputs and, written last as the commit, ``provenance.json``: a resource
without it is incomplete and is redone. Fields are experiment custom fields;
frameset definitions are files of a project resource.

The HTTP client and the cache are given to the store (:meth:`AsyncXnatStore.connect`
and :meth:`~AsyncXnatStore.from_settings` build them), so tests can pass their own.
Use it from one event loop: its client's connections belong to that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import posixpath
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from .._aio import together
from .._fs import atomic_write_bytes
from .._layout import PROVENANCE_DIR
from ..cache import Cache, EntryKey, EntryUse, RemoteFile
from ..config import CacheSettings
from ..errors import ConfigError, RemoteNotFoundError, ServerError, StoreError
from ._data_model import (
    DataEntry,
    DataRow,
    DataTree,
    FileSet,
    derivative_path,
    split_derivative_path,
    validate_label,
    validate_relative_path,
)
from ._remote import (
    default_work_dir,
    entry_work_dir,
    link_entry,
)
from ._store import FieldValue
from ._upload_cache import cache_upload, cached_provenance, provenance_key
from ._xnat_client import RetryPolicy, XnatClient
from ._xnat_credentials import resolve_credentials
from ._xnat_fields import (
    UPLOAD_PARAMS,
    definition_path,
    download_value,
    get_json_object,
    load_definition,
    save_definition,
    upload_value,
)
from ._xnat_names import (
    PROVENANCE_FILE,
    PROVENANCE_RESOURCE,
    SessionListing,
    output_prefix,
    project_path,
    quote_segment,
    resource_label,
    session_path,
)
from ._xnat_resources import (
    check_derivative,
    list_resource,
    prepare_fileset,
    prepare_upload,
    send_changes,
    verify_upload,
)
from ._xnat_sessions import SessionIndex

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["DEFAULT_SESSION_TYPE", "AsyncXnatStore"]

logger = logging.getLogger(__name__)

DEFAULT_SESSION_TYPE = "xnat:mrSessionData"


class _EntrySource:
    """The cache's view of one entry's files on the server (an ``ArchiveSource``)."""

    supports_range = True

    def __init__(self, client: XnatClient, base: str, what: str) -> None:
        self._client = client
        self._base = base
        self._what = what

    def stream(self, file: RemoteFile, offset: int, end: int | None = None) -> AsyncIterator[bytes]:
        path = f"{self._base}/files/{quote(file.name, safe='/')}"
        return self._client.stream(path, offset, f"file {file.name} of {self._what}", end)

    def archive(self) -> AsyncIterator[bytes]:
        # XNAT zips a resource's files on the fly: one request for all of them.
        path = f"{self._base}/files?format=zip"
        return self._client.stream(path, 0, f"the files of {self._what} as a zip")


def _read_copy(copy: Path, md5: str) -> dict[str, Any] | None:
    """The provenance in the work tree's ``copy``, if it is the file of digest ``md5``."""
    try:
        data = copy.read_bytes()
    except OSError:
        return None
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        return None
    document = json.loads(data)
    return document if isinstance(document, dict) else None


def _keep_copy(copy: Path, provenance: dict[str, Any]) -> None:
    # The bytes put_provenance sends: their digest is what the server lists.
    atomic_write_bytes(copy, (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode())


def _marker_name(entry: DataEntry) -> str:
    """The name of ``entry``'s provenance file in the session's PROVENANCE resource."""
    return f"{resource_label(entry.path)}.json"


class AsyncXnatStore:
    """One project of an XNAT server as a Sinagot dataset (see the module docstring)."""

    def __init__(
        self,
        client: XnatClient,
        cache: Cache,
        *,
        local_root: Path | None = None,
        concurrent_files: int = 8,
        session_xsi_type: str = DEFAULT_SESSION_TYPE,
    ) -> None:
        self.project = validate_label(client.project, "[store] project")
        self.client = client
        self.server = client.server
        self.cache = cache
        self.local_root = Path(local_root or default_work_dir(self.server, self.project))
        self.concurrent_files = concurrent_files
        self.session_xsi_type = session_xsi_type
        self._index = SessionIndex(client)

    @classmethod
    def connect(
        cls,
        server: str,
        *,
        project: str,
        user: str | None = None,
        password: str | None = None,
        password_credential: str | None = None,
        netrc_file: Path | None = None,
        cache: Cache | None = None,
        local_root: Path | None = None,
        max_connections: int = 8,
        concurrent_files: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        session_xsi_type: str = DEFAULT_SESSION_TYPE,
    ) -> AsyncXnatStore:
        """A store with its own client (credentials as :func:`resolve_credentials` finds them)
        and, unless given, the default cache."""
        validate_label(project, "[store] project")
        credentials = resolve_credentials(
            server, user, password, credential=password_credential, netrc_file=netrc_file
        )
        client = XnatClient(
            server,
            credentials,
            project=project,
            max_connections=max_connections,
            retry=retry,
            timeout=timeout,
        )
        return cls(
            client,
            cache if cache is not None else Cache.from_settings(CacheSettings()),
            local_root=local_root,
            concurrent_files=concurrent_files,
            session_xsi_type=session_xsi_type,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncXnatStore:
        """The store of a ``[store] type = "xnat"`` config."""
        store = settings.store
        if not store.server or not store.project:
            raise ConfigError(
                f"{settings.config_path}: [store] needs server and project for type 'xnat'"
            )
        return cls.connect(
            store.server,
            project=store.project,
            user=store.user,
            password=store.password,
            password_credential=store.password_credential,
            cache=Cache.from_settings(store.cache),
            local_root=settings.dataset_dir,
            max_connections=store.max_connections,
            concurrent_files=store.concurrent_files,
        )

    def __repr__(self) -> str:
        return f"AsyncXnatStore({self.server!r}, project={self.project!r}, user={self.user!r})"

    @property
    def user(self) -> str:
        return self.client.user

    async def login(self) -> None:
        await self.client.login()

    async def aclose(self) -> None:
        """End the server session and close the connections."""
        await self.client.aclose()

    # -- paths ---------------------------------------------------------------------------

    def project_path(self, project: str | None = None) -> str:
        return project_path(project or self.project)

    def session_path(self, label: str) -> str:
        return session_path(self.project, label)

    def entry_key(self, entry: DataEntry) -> EntryKey:
        """The cache key of ``entry``'s files."""
        return self._key(entry.row_id, entry.uri, entry.path)

    def _key(self, label: str, uri: str, what: str) -> EntryKey:
        prefix = self.session_path(label) + "/"
        if not uri.startswith(prefix):
            raise StoreError(f"entry {what} of {label} has a foreign URI {uri}")
        return EntryKey(self.server, self.project, label, unquote(uri[len(prefix) :]))

    def work_dir(self, entry: DataEntry) -> Path:
        return entry_work_dir(self.local_root, entry)

    # -- listing -------------------------------------------------------------------------

    async def list_sessions(self) -> list[SessionListing]:
        """Every session of the project with its last modification time, in ONE request."""
        return await self._index.list_sessions()

    async def still_listed(self, label: str) -> bool:
        """Whether the project still lists session ``label``: its one row of the listing."""
        return await self._index.session_stamp(label) is not None

    async def populate_tree(self, tree: DataTree) -> None:
        for session in await self._index.list_sessions():
            tree.add_leaf((session.label,), last_modified=session.last_modified)

    async def populate_row(self, row: DataRow) -> None:
        """Add the session's scan resources ("task/modality") and derivatives to ``row``."""
        await self._index.populate_row(row)

    async def settled_stamp(self, label: str) -> str | None:
        """The session's ``last_modified`` now, if its scan files are unchanged.

        Unchanged means: the same files with the same digests as when
        :meth:`populate_row` last listed session ``label``. A caller that
        processed those files and uploaded its results can take the session as
        processed up to this stamp, its own uploads included. None when a scan
        file changed, was added or removed. Where the server lists no digests,
        sizes decide, and the cached files are restamped so they stay current.
        Costs two requests: the session's row of the project listing, then its
        scan files in one listing where the server offers it.
        """
        stamp = await self._index.unchanged_since_fetch(label)
        fetched_at = self._index.stamps.get(label)
        if stamp is None or fetched_at is None or fetched_at == stamp:
            return stamp
        # Its files without digests are cached for the marker they had: still theirs.
        for uri, files in self._index.listings.get(label, {}).items():
            if any(not f.digest for f in files):
                key = self._key(label, uri, uri)
                await asyncio.to_thread(self.cache.restamp, key, fetched_at, stamp)
        self._index.stamps[label] = stamp
        return stamp

    def forget_session(self, label: str) -> None:
        """Drop what :meth:`populate_row` remembered of session ``label``.

        Later downloads of its files list them again. A long-running caller
        (the daemon) calls this when it is done with a session, so memory does
        not grow with every session it ever processed.
        """
        self._index.forget(label)

    # -- creating --------------------------------------------------------------------------

    async def create_data_tree(self, id: str, leaves: Sequence[tuple[str, ...]]) -> None:
        """Create one subject and one session per leaf (subject = first id, session = last)."""
        project = self.project_path(validate_label(id, "project id"))
        for leaf in leaves:
            subject, session = (validate_label(part, "leaf id") for part in (leaf[0], leaf[-1]))
            subject_path = f"{project}/subjects/{quote_segment(subject)}"
            await self.client.request(
                "PUT", subject_path, f"project {id}", params={"xsiType": "xnat:subjectData"}
            )
            await self.client.request(
                "PUT",
                f"{subject_path}/experiments/{quote_segment(session)}",
                f"subject {subject}",
                params={"xsiType": self.session_xsi_type},
            )

    def new_entry(self, path: str, row: DataRow) -> DataEntry:
        """Declare derivative ``path`` (``name@pipeline``) in ``row``; nothing is sent yet."""
        try:
            name, pipeline = split_derivative_path(path)
        except ValueError:
            raise StoreError(
                f"{path!r} is not a derivative path: outputs are named 'name@pipeline'"
                " so they can never overwrite acquired data"
            ) from None
        derivative_path(name, pipeline)  # validates both parts
        uri = f"{self.session_path(row.id)}/resources/{quote_segment(resource_label(path))}"
        return row.add_entry(path, uri=uri)

    # -- files ---------------------------------------------------------------------------

    async def download_files(self, entry: DataEntry, download_dir: Path | None = None) -> Path:
        """Fetch the files of ``entry`` verified into the cache (or one at ``download_dir``);
        return the folder holding them."""
        what = f"{entry.path} of session {entry.row_id}"
        key = self.entry_key(entry)
        listed = self._index.listings.get(entry.row_id, {}).get(entry.uri)
        if listed is None:
            listed = tuple((await list_resource(self.client, entry.uri, what)).values())
        if entry.is_derivative:
            listed = tuple(f for f in listed if f.name != PROVENANCE_FILE)
        cache = self.cache
        if download_dir is not None and Path(download_dir) != cache.root:
            cache = Cache.from_settings(dataclasses.replace(cache.settings, dir=Path(download_dir)))
        # Digests decide freshness where the server gives them: our own uploads bump the
        # session's last_modified and must not make cached scans look stale. Files without
        # a digest are versioned by that stamp (see settled_stamp, which restamps them).
        stamp = None
        if any(not f.digest for f in listed):
            stamp = self._index.stamps.get(entry.row_id)
        return await cache.fetch(
            key, listed, _EntrySource(self.client, entry.uri, what), last_modified=stamp
        )

    def entry_in_use(self, entry: DataEntry) -> EntryUse:
        """Held while the cached files of ``entry`` are read (see :meth:`Cache.using`)."""
        return self.cache.using(self.entry_key(entry))

    async def get_fileset(self, entry: DataEntry) -> FileSet:
        """The verified files of ``entry``, linked into the work tree (LocalStore layout).

        A derivative's resource holds its outputs relative to their folder (see
        :func:`output_prefix`; a Sinagot 0.1 layout's provenance names it as ``folder``):
        they are linked back into that folder, and named as in the work tree. One in the
        layout before 0.2 holds them as named there.
        """
        root = self.work_dir(entry)
        prefix = ""
        if entry.is_derivative:
            provenance, legacy = await self._provenance(entry)
            if provenance is not None and not legacy:
                folder = provenance.get("folder")
                if not isinstance(folder, str):
                    prefix = output_prefix(provenance.get("outputs", {}))
                elif folder:
                    prefix = validate_relative_path(folder, "derivative folder")
        async with self.entry_in_use(entry):
            cached = await self.download_files(entry)
            names = await asyncio.to_thread(link_entry, cached, root / prefix)
        return FileSet(root=root, names=tuple(posixpath.join(prefix, name) for name in names))

    async def upload_files(
        self,
        input_dir: Path,
        entry: DataEntry,
        names: Sequence[str] | None = None,
        checksums: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Upload ``names`` (default: every file) below ``input_dir`` as the files of
        derivative ``entry``, skipping those the server already holds; their MD5s."""
        upload = await prepare_upload(
            self.client, Path(input_dir), entry, names, checksums or {}, absent=self._absent(entry)
        )
        await send_changes(self.client, entry, upload, self.concurrent_files)
        self._note_resource(entry)
        return upload.local

    async def get_checksums(self, uri: str) -> dict[str, str]:
        """The server's digests of the files of the entry at ``uri`` (provenance excluded)."""
        what = f"resource {unquote(uri.rsplit('/', 1)[-1])}"
        listed = await list_resource(self.client, uri, what)
        return {n: f.digest for n, f in listed.items() if n != PROVENANCE_FILE}

    async def put_fileset(self, fileset: FileSet, entry: DataEntry) -> FileSet:
        """Upload ``fileset`` as derivative ``entry`` and check the server's digests of it.

        The entry is un-committed first (its provenance removed): an upload cut short
        never looks complete. Its resource gets the files relative to their folder
        (:func:`output_prefix`), as FrameTree reads a column. What the session's listing
        (:meth:`populate_row`) showed absent, the resource or its provenance, is not
        asked about again.
        """
        check_derivative(entry)
        # Both before the first PUT, and independent: one round trip for the two requests.
        (relative, upload), _ = await asyncio.gather(
            prepare_fileset(self.client, fileset, entry, absent=self._absent(entry)),
            self._uncommit(entry),
        )
        await send_changes(self.client, entry, upload, self.concurrent_files)
        self._note_resource(entry)
        listed = await verify_upload(self.client, entry, upload)
        sources = {name: upload.root / name for name in upload.local}
        await cache_upload(self.cache, self.entry_key(entry), listed, sources)
        stored = {name: upload.local[relative[name]] for name in fileset.names}
        return dataclasses.replace(fileset, checksums=MappingProxyType(stored))

    # -- provenance ------------------------------------------------------------------------

    def _marker_uri(self, entry: DataEntry) -> str:
        """Where FrameTree keeps the provenance of ``entry`` (Sinagot's commit marker)."""
        file = quote_segment(_marker_name(entry))
        return f"{self.session_path(entry.row_id)}/resources/{PROVENANCE_RESOURCE}/files/{file}"

    def _provenance_copy(self, entry: DataEntry) -> Path:
        """Where the work tree keeps a copy of what the server holds as ``entry``'s provenance."""
        return self.work_dir(entry) / PROVENANCE_DIR / f"{entry.path}.json"

    def _marker_key(self, entry: DataEntry) -> EntryKey:
        """The cache entry of ``entry``'s provenance (see :func:`provenance_key`)."""
        return provenance_key(self.server, self.project, entry.row_id, _marker_name(entry))

    async def _provenance(self, entry: DataEntry) -> tuple[dict[str, Any] | None, bool]:
        """The provenance of ``entry`` (None: not complete), and whether it is in the layout
        before 0.2 (inside the derivative's resource).

        When the session's provenance listing shows the digest of the work tree's copy,
        that copy is used: no request.
        """
        what = f"provenance of {entry.path} of session {entry.row_id}"
        markers = self._index.markers.get(entry.row_id)
        listed = None if markers is None else markers.get(_marker_name(entry))
        copy = self._provenance_copy(entry)
        try:
            if listed:
                known = await asyncio.to_thread(_read_copy, copy, listed)
                if known is not None:
                    return known, False
                # A fresh work tree: the cache has it if it was uploaded through this cache.
                known = await cached_provenance(self.cache, self._marker_key(entry), listed)
                if known is not None:
                    await asyncio.to_thread(_keep_copy, copy, known)
                    return known, False
            if listed is not None or markers is None:
                raw = await get_json_object(self.client, self._marker_uri(entry), what)
                if raw is not None:
                    await asyncio.to_thread(_keep_copy, copy, raw)
                    return raw, False
            legacy = f"{entry.uri}/files/{PROVENANCE_FILE}"
            return await get_json_object(self.client, legacy, what), True
        except ServerError as exc:
            logger.warning("%s; the step will run again", exc)
            return None, False

    async def get_provenance(self, entry: DataEntry) -> dict[str, Any] | None:
        """The provenance of ``entry``, or None if it has none (it is not complete)."""
        return (await self._provenance(entry))[0]

    def _note_marker(self, entry: DataEntry, md5: str | None) -> None:
        """Keep the session's provenance listing true to our own writes (None: deleted)."""
        markers = self._index.markers.get(entry.row_id)
        if markers is not None:
            name = _marker_name(entry)
            if md5 is None:
                markers.pop(name, None)
            else:
                markers[name] = md5

    def _absent(self, entry: DataEntry) -> bool:
        """Whether the session's listing showed no resource for derivative ``entry``."""
        labels = self._index.resources.get(entry.row_id)
        return labels is not None and resource_label(entry.path) not in labels

    def _note_resource(self, entry: DataEntry) -> None:
        """Keep the session's resource listing true to our own uploads."""
        labels = self._index.resources.get(entry.row_id)
        if labels is not None:
            labels.add(resource_label(entry.path))

    async def _uncommit(self, entry: DataEntry) -> None:
        markers = self._index.markers.get(entry.row_id)
        if markers is not None and _marker_name(entry) not in markers:
            return  # the session's listing showed no provenance of it: nothing to remove
        self._note_marker(entry, None)
        # Not found: never committed.
        with contextlib.suppress(RemoteNotFoundError):
            await self.client.request(
                "DELETE", self._marker_uri(entry), f"provenance of {entry.path} of {entry.row_id}"
            )

    async def put_provenance(self, provenance: dict[str, Any], entry: DataEntry) -> None:
        """Store the provenance of ``entry``: written last, it marks the entry complete.

        It goes where FrameTree's ``get_provenance`` reads it (the session resource
        ``PROVENANCE``, created on first use).
        """
        body = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
        what = f"provenance of {entry.path} of session {entry.row_id}"
        uri = self._marker_uri(entry)

        async def send() -> None:
            try:
                await self.client.request("PUT", uri, what, params=UPLOAD_PARAMS, body=body)
            except RemoteNotFoundError:
                resource = f"{self.session_path(entry.row_id)}/resources/{PROVENANCE_RESOURCE}"
                await self.client.request("PUT", resource, what, params={"format": "PROVENANCE"})
                await self.client.request("PUT", uri, what, params=UPLOAD_PARAMS, body=body)

        # The copy is read only where the session's listing shows its digest, and so is
        # the cache entry made of it (listing the resource after the PUT would cost a
        # request per step): both can be written while the PUT is out.
        copy = self._provenance_copy(entry)
        await asyncio.to_thread(atomic_write_bytes, copy, body)
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        name = _marker_name(entry)
        sent = {name: RemoteFile(name, len(body), md5)}
        await together(
            [send(), cache_upload(self.cache, self._marker_key(entry), sent, {name: copy})]
        )
        self._note_marker(entry, md5)

    # -- fields and frameset definitions -------------------------------------------------

    async def download_value(self, entry: DataEntry) -> FieldValue:
        """The value of field ``entry`` (a custom field of the session)."""
        return await download_value(self.client, self.session_path(entry.row_id), entry)

    async def upload_value(self, value: FieldValue, entry: DataEntry) -> None:
        """Store ``value`` as field ``entry`` (a custom field of the session)."""
        await upload_value(
            self.client,
            self.session_path(entry.row_id),
            entry,
            value,
            self._index.xsi_types.get(entry.row_id, ""),
            self.session_xsi_type,
        )

    async def save_frameset_definition(
        self, dataset_id: str, definition: dict[str, Any], name: str
    ) -> None:
        path = definition_path(self.project_path(validate_label(dataset_id, "project id")), name)
        await save_definition(self.client, path, definition, f"{name} of project {dataset_id}")

    async def load_frameset_definition(self, dataset_id: str, name: str) -> dict[str, Any] | None:
        path = definition_path(self.project_path(validate_label(dataset_id, "project id")), name)
        return await load_definition(self.client, path, f"{name} of project {dataset_id}")
