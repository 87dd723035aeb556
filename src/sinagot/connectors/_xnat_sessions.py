"""What the store knows of a project's sessions: the listing, each session's files, their stamps.

One request lists every session of the project with its modification stamp;
:meth:`SessionIndex.populate_row` lists a session's scans, resources and scan
files (in one request where the server offers ``scans/ALL/files``) and keeps
them, so that downloads and :meth:`SessionIndex.unchanged_since_fetch` need not
list them again. A long-running caller forgets a session once done with it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from urllib.parse import unquote

from .._aio import together
from ..cache import RemoteFile
from ..errors import RemoteNotFoundError, RequestRefusedError, ServerError, StoreError
from ._data_model import DataRow, derivative_path, validate_label
from ._xnat_client import XnatClient
from ._xnat_names import (
    AT,
    EXPERIMENT_COLUMNS,
    FILE_IN_URI,
    PROVENANCE_RESOURCE,
    SessionListing,
    by_uri,
    file_name,
    project_path,
    quote_segment,
    remote_file,
    same_files,
    scan_resource_uri,
    session_path,
)

__all__ = ["SessionIndex"]

logger = logging.getLogger(__name__)

# Servers already said to list files without digests (said once per process each).
_WITHOUT_DIGESTS: set[str] = set()


class SessionIndex:
    """The sessions of ``client``'s project, as listed (see the module docstring)."""

    def __init__(self, client: XnatClient) -> None:
        self.client = client
        self.project = client.project
        self.project_path = project_path(client.project)
        # Scan-file listings learnt by populate_row, by session label then resource URI:
        # sizes and digests for the cache and for settled stamps.
        self.listings: dict[str, dict[str, tuple[RemoteFile, ...]]] = {}
        # The session's change marker when its files without digests were listed: the
        # cache matches such files by it (and by size).
        self.stamps: dict[str, str] = {}
        # The last project listing, by label, and each session's type.
        self.sessions: dict[str, SessionListing] = {}
        self.xsi_types: dict[str, str] = {}
        # The provenance files of each populated session with their digests: a derivative
        # whose provenance has the digest of the copy in the work tree needs no request.
        self.markers: dict[str, dict[str, str]] = {}
        # The labels of each populated session's resources: a derivative without one is
        # new, nothing of it is on the server to list or remove.
        self.resources: dict[str, set[str]] = {}
        self.all_files_listing = True
        # The last listing and the digest of the answer it was read from.
        self._listing: list[SessionListing] = []
        self._listing_digest: bytes | None = None

    async def list_sessions(self) -> list[SessionListing]:
        """Every session of the project with its last modification time, in ONE request.

        While the server's answer stays the same, the same list is returned (do not
        modify it): a caller polling a large project can tell an unchanged listing
        by its identity, and skip comparing it session by session.
        """
        digest, rows = await self.client.list_rows_if_changed(
            f"{self.project_path}/experiments",
            f"project {self.project}",
            {"columns": EXPERIMENT_COLUMNS},
            self._listing_digest,
        )
        if rows is None:
            return self._listing
        sessions: list[SessionListing] = []
        # Rebuilt from each listing: sessions deleted on the server are not kept. The few
        # session types are shared strings: a project may list hundreds of thousands.
        xsi_types: dict[str, str] = {}
        for row in rows:
            label = row.get("label", "")
            try:
                validate_label(label, "session label")
            except StoreError as exc:
                logger.warning("ignoring a session of project %s: %s", self.project, exc)
                continue
            modified = row.get("last_modified") or row.get("insert_date", "")
            xsi_types[label] = sys.intern(row.get("xsiType", ""))
            sessions.append(SessionListing(label, modified))
        sessions.sort()
        self.sessions = {session.label: session for session in sessions}
        self.xsi_types = xsi_types
        self._listing, self._listing_digest = sessions, digest
        return sessions

    async def scan_files(
        self, session: str, scan_ids: Sequence[str]
    ) -> dict[tuple[str, str], list[RemoteFile]]:
        """Files of every scan resource, by (scan id, resource label): one listing if possible."""
        what = f"the scan files of session {session}"
        grouped: dict[tuple[str, str], list[RemoteFile]] = {}
        rows = None
        if self.all_files_listing:
            try:
                rows = await self.client.list_rows(f"{session}/scans/ALL/files", what)
            except (RemoteNotFoundError, RequestRefusedError):
                # A server without the one-request listing: remember, list per resource.
                logger.info("%s cannot list all scan files at once", self.client.server)
                self.all_files_listing = False
        if rows is not None:
            for row in rows:
                match = FILE_IN_URI.search(row.get("URI", ""))
                if match is None:
                    raise ServerError(f"the listing of {what} has a file without a scan URI")
                scan, resource = unquote(match.group(1)), unquote(match.group(2))
                label = row.get("collection") or resource
                name = file_name(row["URI"], row.get("Name", ""))
                grouped.setdefault((scan, label), []).append(remote_file(row, name, what))
            return grouped

        async def resources_of(scan: str) -> list[tuple[str, str]]:
            listed = await self.client.list_rows(
                f"{session}/scans/{quote_segment(scan)}/resources", f"resources of scan {scan}"
            )
            return [(scan, r.get("label", "")) for r in listed]

        async def files_of(scan: str, label: str) -> None:
            listed = await self.client.list_rows(
                f"{scan_resource_uri(session, scan, label)}/files",
                f"resource {label} of scan {scan}",
            )
            grouped[(scan, label)] = [
                remote_file(r, file_name(r.get("URI", ""), r.get("Name", "")), what) for r in listed
            ]

        # Independent listings: send them together (the pool bounds the connections).
        per_scan = await together([resources_of(scan) for scan in scan_ids])
        await together([files_of(scan, label) for pairs in per_scan for scan, label in pairs])
        return grouped

    async def populate_row(self, row: DataRow) -> None:
        """Add the session's scan resources ("task/modality") and derivatives to ``row``."""
        session = session_path(self.project, row.id)
        # The session must exist for either listing: its 404 names the session.
        scans, resources = await together(
            [
                self.client.list_rows(f"{session}/scans", f"session {row.id}"),
                self.client.list_rows(f"{session}/resources", f"session {row.id}"),
            ]
        )
        types = {s.get("ID", ""): s.get("type", "") for s in scans}
        labels = self.resources[row.id] = {resource.get("label", "") for resource in resources}
        if PROVENANCE_RESOURCE in labels:
            # Both listings at once; the markers' own failure is raised after the files'.
            markers = asyncio.ensure_future(self._markers(session, row.id))
            try:
                files = await self.scan_files(session, list(types))
            except BaseException:
                markers.cancel()
                await asyncio.wait([markers])
                raise
            self.markers[row.id] = await markers
        else:
            files = await self.scan_files(session, list(types))
            self.markers[row.id] = {}
        self.listings[row.id] = by_uri(session, files)
        if any(not f.digest for listed in files.values() for f in listed):
            await self._stamp_without_digests(row)
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
                uri=scan_resource_uri(session, scan, label),
                checksums={f.name: f.digest for f in listed},
                last_modified=row.last_modified,
            )
        for resource in resources:
            label = resource.get("label", "")
            name, sep, pipeline = label.partition(AT)
            if not sep:
                continue
            try:
                path = derivative_path(name, pipeline)
            except StoreError as exc:
                logger.warning("session %s: ignoring resource %r: %s", row.id, label, exc)
                continue
            row.add_entry(path, uri=f"{session}/resources/{quote_segment(label)}")

    async def _markers(self, session: str, label: str) -> dict[str, str]:
        """The session's provenance files (FrameTree's ``PROVENANCE`` resource) and digests."""
        what = f"the provenance of session {label}"
        rows = await self.client.list_rows(f"{session}/resources/{PROVENANCE_RESOURCE}/files", what)
        return {
            file.name: file.digest
            for file in (
                remote_file(r, file_name(r.get("URI", ""), r.get("Name", "")), what) for r in rows
            )
        }

    async def _stamp_without_digests(self, row: DataRow) -> None:
        """Remember the change marker that versions the session's files listed without digest."""
        if self.client.server not in _WITHOUT_DIGESTS:
            _WITHOUT_DIGESTS.add(self.client.server)
            logger.warning(
                "%s lists files without MD5 digests (its checksum setting is off, or they were"
                " archived before it was on): their integrity rests on sizes, and a change is"
                " seen through the session's last-modified stamp",
                self.client.server,
            )
        known = self.sessions.get(row.id)
        stamp = row.last_modified or (known.last_modified if known is not None else None)
        if not stamp:
            stamp = await self.session_stamp(row.id)
        if stamp:
            self.stamps[row.id] = stamp

    async def session_stamp(self, label: str) -> str | None:
        # XNAT filters a listing on a column's value (``*`` as a wildcard, hence the exact
        # match below): one row instead of the whole project.
        rows = await self.client.list_rows(
            f"{self.project_path}/experiments",
            f"session {label}",
            {"columns": EXPERIMENT_COLUMNS, "label": label},
        )
        for row in rows:
            if row.get("label") == label:
                return row.get("last_modified") or row.get("insert_date") or None
        return None

    def forget(self, label: str) -> None:
        """Drop the listings :meth:`populate_row` remembered for session ``label``.

        Later downloads of its files list them again. A long-running caller
        (the daemon) calls this when it is done with a session, so memory does
        not grow with every session it ever processed.
        """
        # One dict operation, atomic under the GIL: safe from any thread.
        self.listings.pop(label, None)
        self.markers.pop(label, None)
        self.resources.pop(label, None)
        self.stamps.pop(label, None)

    async def unchanged_since_fetch(self, label: str) -> str | None:
        """The session's ``last_modified`` now, if its scan files are those
        :meth:`populate_row` last listed (by digest, or by size where there is none)."""
        listed = self.listings.get(label)
        if listed is None:
            return None
        # The stamp first: any change after this request moves the stamp past it,
        # and a change of scan files before it shows in the listing below.
        stamp = await self.session_stamp(label)
        if stamp is None:
            return None
        session = session_path(self.project, label)
        scan_ids: list[str] = []
        if not self.all_files_listing:
            scans = await self.client.list_rows(f"{session}/scans", f"session {label}")
            scan_ids = [s.get("ID", "") for s in scans]
        current = by_uri(session, await self.scan_files(session, scan_ids))
        return stamp if same_files(listed, current) else None
