"""The files of one XNAT resource: listing them, and bringing them in step with a folder.

An upload compares the local files (MD5s, sizes) with the resource's listing, PUTs
what the server lacks or holds other bytes of, DELETEs what it should not hold, and
checks the digests the server lists afterwards (sizes where it lists none). A resource
the caller knows to be absent is not listed: its files all go, and its first PUT
creates it. How the bytes travel is :mod:`._xnat_upload`'s business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote

from .._aio import together
from .._layout import list_files
from ..cache import RemoteFile
from ..errors import RemoteNotFoundError, StoreError
from ._data_model import DataEntry, FileSet, validate_relative_path
from ._remote import check_uploaded, checksums_of
from ._xnat_client import XnatClient
from ._xnat_fields import UPLOAD_PARAMS
from ._xnat_names import PROVENANCE_FILE, file_name, output_prefix, remote_file
from ._xnat_upload import ArchiveBody, FileBody, UploadBody, plan_uploads

__all__ = [
    "ResourceUpload",
    "check_derivative",
    "list_resource",
    "prepare_fileset",
    "prepare_upload",
    "send_changes",
    "verify_upload",
]

logger = logging.getLogger(__name__)

# An archive PUT with these is unpacked into the resource, one file per member.
_EXTRACT_PARAMS = MappingProxyType({**UPLOAD_PARAMS, "extract": "true"})


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceUpload:
    """The files below ``root`` to upload (MD5s, sizes) and those the server holds
    (``new``: none, the resource does not exist yet)."""

    root: Path
    what: str
    local: dict[str, str]
    sizes: dict[str, int]
    remote: dict[str, RemoteFile]
    new: bool = False


async def list_resource(client: XnatClient, uri: str, what: str) -> dict[str, RemoteFile]:
    """The files of the resource at ``uri`` by name, as the server lists them."""
    rows = await client.list_rows(f"{uri}/files", what)
    files = [remote_file(r, file_name(r.get("URI", ""), r.get("Name", "")), what) for r in rows]
    return {f.name: f for f in files}


def check_derivative(entry: DataEntry) -> None:
    if not entry.is_derivative:
        raise StoreError(
            f"refusing to upload into acquired data {entry.path} of {entry.row_id}:"
            " Sinagot only writes derivatives (name@pipeline)"
        )


def _output_names(root: Path, names: Sequence[str] | None, what: str) -> tuple[str, ...]:
    """``names`` (default: every file below ``root``), each checked as an output (blocking)."""
    if names is None:
        names = list_files(root)
    for name in names:
        validate_relative_path(name, "output")
        if name == PROVENANCE_FILE:
            raise StoreError(
                f"output {name} of {what} clashes with the provenance file: rename the output"
            )
    return tuple(names)


def _resource_names(names: Sequence[str], folder: str | None) -> tuple[str, dict[str, str]]:
    """The folder of the outputs ``names`` (``folder``, else :func:`output_prefix`) and each
    name relative to it, as their resource holds them."""
    prefix = output_prefix(names) if folder is None else folder
    return prefix, {name: posixpath.relpath(name, prefix or ".") for name in names}


def _local_files(fileset: FileSet) -> tuple[dict[str, str], dict[str, int]]:
    """The MD5 and the size of each file of ``fileset`` (blocking)."""
    sizes = {name: (fileset.root / name).stat().st_size for name in fileset.names}
    return checksums_of(fileset), sizes


async def _resource_files(
    client: XnatClient, entry: DataEntry, what: str, absent: bool
) -> dict[str, RemoteFile] | None:
    """The files of ``entry``'s resource; None if it does not exist (``absent``: known so)."""
    if absent:
        return None
    try:
        return await list_resource(client, entry.uri, what)
    except RemoteNotFoundError:
        return None


async def prepare_upload(
    client: XnatClient,
    root: Path,
    entry: DataEntry,
    names: Sequence[str] | None,
    checksums: Mapping[str, str],
    *,
    absent: bool = False,
) -> ResourceUpload:
    """The local files to upload as ``entry`` (MD5s, sizes) and those the server holds.

    ``absent``: the caller knows that the resource does not exist (it listed the
    session without it): it is not listed.
    """
    check_derivative(entry)
    what = f"{entry.path} of session {entry.row_id}"
    checked = await asyncio.to_thread(_output_names, root, names, what)
    fileset = FileSet(root, checked, checksums)
    # Files without a known MD5 are hashed while the request is out.
    (local, sizes), remote = await asyncio.gather(
        asyncio.to_thread(_local_files, fileset), _resource_files(client, entry, what, absent)
    )
    return ResourceUpload(root, what, local, sizes, remote or {}, new=remote is None)


async def prepare_fileset(
    client: XnatClient, fileset: FileSet, entry: DataEntry, *, absent: bool = False
) -> tuple[dict[str, str], ResourceUpload]:
    """The upload of ``fileset`` as its resource holds it (relative to the outputs' folder,
    as FrameTree reads a column, or to ``fileset.folder``), with each name's name in the
    resource (``absent``: as for :func:`prepare_upload`)."""
    prefix, relative = await asyncio.to_thread(_resource_names, fileset.names, fileset.folder)
    known = {relative[n]: md5 for n, md5 in fileset.checksums.items() if n in relative}
    upload = await prepare_upload(
        client, fileset.root / prefix, entry, list(relative.values()), known, absent=absent
    )
    return relative, upload


async def send_changes(
    client: XnatClient, entry: DataEntry, upload: ResourceUpload, concurrent_files: int
) -> None:
    """PUT the files the server lacks or holds other bytes of; DELETE those it should not.

    Many small files go as a few archives the server unpacks (see :mod:`._xnat_upload`).
    A new resource is created by its one PUT when a single request carries its files
    (XNAT creates the resource a file is uploaded into); otherwise, or when the server
    refuses that, by a request of its own first: PUTs side by side into a missing
    resource could each create one.
    """
    local, remote, what = upload.local, upload.remote, upload.what
    files = f"{entry.uri}/files"
    if PROVENANCE_FILE in remote:
        # Un-commit first, so an interrupted re-upload never looks complete.
        await client.request("DELETE", f"{files}/{PROVENANCE_FILE}", what)
    changed = [n for n in local if remote.get(n) is None or remote[n].digest != local[n]]
    stale = [n for n in remote if n not in local and n != PROVENANCE_FILE]
    alone, batches = plan_uploads(changed, upload.sizes, concurrent_files)
    slots = asyncio.Semaphore(concurrent_files)

    async def send(
        method: str,
        name: str,
        about: str,
        body: UploadBody | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        async with slots:
            await client.request(method, f"{files}/{name}", about, params=params, body=body)

    async def put_file(name: str) -> None:
        body = FileBody(upload.root / name, upload.sizes[name])
        await send("PUT", quote(name, safe="/"), f"file {name} of {what}", body, UPLOAD_PARAMS)

    async def put_archive(index: int, batch: list[str]) -> None:
        members = [(name, upload.sizes[name]) for name in batch]
        # Its tar headers take ~50 us each to build: not on the event loop.
        body = await asyncio.to_thread(ArchiveBody, upload.root, members)
        about = f"{len(batch)} files of {what} ({batch[0]} to {batch[-1]}, in an archive)"
        await send("PUT", f"upload-{index}.tar", about, body, _EXTRACT_PARAMS)

    async def create() -> None:
        await client.request("PUT", entry.uri, f"resource of {what}")

    logger.info(
        "uploading %d of %d files of %s (%d in %d archives; %d stale removed)",
        len(changed),
        len(local),
        what,
        len(changed) - len(alone),
        len(batches),
        len(stale),
    )
    requests = [
        *(functools.partial(put_file, name) for name in alone),
        *(functools.partial(put_archive, index, batch) for index, batch in enumerate(batches, 1)),
        *(
            functools.partial(send, "DELETE", quote(n, safe="/"), f"file {n} of {what}")
            for n in stale
        ),
    ]
    if upload.new and len(requests) == 1:
        try:
            await requests[0]()
        except RemoteNotFoundError:
            await create()
            await requests[0]()
        return
    if upload.new:
        await create()
    await together([request() for request in requests])


async def verify_upload(
    client: XnatClient, entry: DataEntry, upload: ResourceUpload
) -> dict[str, RemoteFile]:
    """Check that the server lists the uploaded files with their MD5s (or, for a server
    without digests, their sizes); the resource's files as it lists them."""
    local, sizes = upload.local, upload.sizes
    listed = await list_resource(client, entry.uri, upload.what)
    # A server without digests (checksums off) lists none: the size must match then.
    remote = {
        name: file.digest or (local.get(name, "") if file.size == sizes.get(name) else "")
        for name, file in listed.items()
    }
    check_uploaded(client.server, entry.uri, local, remote)
    return listed
