"""Handlers of resources and their files (uploads are in ``_upload``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from ._body import FileBody, Reply, StreamBody, text, zip_chunks
from ._columns import (
    FILE_COLUMNS,
    RESOURCE_COLUMNS,
    created_reply,
    file_row,
    item_reply,
    listing_reply,
    resource_row,
)
from ._context import Call, HttpError, Resolved, find_resource, resolve
from ._memo import Memoized
from ._records import Experiment, FileEntry, NotFoundError, Resource, ScanFile
from ._routes import uri_part

__all__ = [
    "delete_file",
    "delete_resource",
    "get_file",
    "get_resource",
    "list_files",
    "list_resources",
    "put_resource",
    "session_files",
]

# Files up to this size are read along with their index row (one thread hop, and the
# bytes always match the digest); larger ones are streamed from disk with sendfile.
_INLINE_LIMIT = 256 * 1024


async def list_resources(call: Call) -> Reply:
    def work() -> tuple[list[Resource], dict[int, tuple[int, int]]]:
        resolved = resolve(call, upto=call.target.owner_level)
        resources = call.store.resources(resolved.owner)
        return resources, call.store.totals([r.id for r in resources])

    resources, totals = await asyncio.to_thread(work)
    rows = [resource_row(r, totals[r.id]) for r in resources]
    return listing_reply(call, rows, RESOURCE_COLUMNS)


async def get_resource(call: Call) -> Reply:
    def work() -> tuple[Resource, tuple[int, int]]:
        resource = find_resource(call, resolve(call, upto=call.target.owner_level))
        return resource, call.store.totals([resource.id])[resource.id]

    resource, totals = await asyncio.to_thread(work)
    row = resource_row(resource, totals)
    row["ID"] = row["xnat_abstractresource_id"]
    return item_reply("xnat:resourceCatalog", row)


async def put_resource(call: Call) -> Reply:
    def work() -> tuple[Resource, bool]:
        resolved = resolve(call, upto=call.target.owner_level)
        assert call.target.resource is not None
        return call.store.create_resource(
            resolved.owner,
            call.target.resource,
            call.param("format"),
            call.param("content"),
            call.param("tags"),
        )

    resource, _created_now = await asyncio.to_thread(work)
    return created_reply(str(resource.id))


async def delete_resource(call: Call) -> Reply:
    def work() -> None:
        call.store.delete_resource(find_resource(call, resolve(call, upto=call.target.owner_level)))

    await asyncio.to_thread(work)
    return text(200, "")


async def list_files(call: Call) -> Reply:
    def work() -> tuple[Resolved, Resource, list[FileEntry]]:
        resolved = resolve(call, upto=call.target.owner_level)
        resource = find_resource(call, resolved)
        return resolved, resource, call.store.files(resource.id)

    resolved, resource, entries = await asyncio.to_thread(work)
    if call.param("format").lower() == "zip":
        root = f"{resolved.zip_root}/resources/{resource.label}/files"
        return _zip_reply(
            [(f"{root}/{e.path}", e.disk_path, e.size) for e in entries], resource.label
        )
    uri = f"{resolved.owner_uri}/resources/{uri_part(resource.label)}"
    rows = [file_row(uri, resource.id, resource.label, e) for e in entries]
    return listing_reply(call, rows, FILE_COLUMNS)


async def session_files(call: Call) -> Reply:
    """``scans/ALL/files``: every scan file of a session, as one zip or one listing."""
    fmt = call.param("format", "zip").lower()
    if fmt not in ("zip", "json", "csv"):
        raise HttpError(400, "scans/ALL/files is available with format=zip, json or csv")

    def work() -> tuple[Experiment, list[ScanFile]]:
        experiment = resolve(call, upto="experiment").experiment
        assert experiment is not None
        return experiment, call.store.scan_files(experiment.id)

    experiment, files = await asyncio.to_thread(work)
    if fmt == "zip":
        return _zip_reply(
            [
                (
                    f"{experiment.label}/scans/{f.scan_id}/resources/{f.resource_label}"
                    f"/files/{f.entry.path}",
                    f.entry.disk_path,
                    f.entry.size,
                )
                for f in files
            ],
            experiment.label,
        )
    # Real XNAT names the resource by its id in these URIs and by its label in
    # ``collection``; clients must read the label from there.
    base = f"/data/experiments/{uri_part(experiment.id)}/scans"
    rows = [
        file_row(
            f"{base}/{uri_part(f.scan_id)}/resources/{f.resource_id}",
            f.resource_id,
            f.resource_label,
            f.entry,
        )
        for f in files
    ]
    return listing_reply(call, rows, FILE_COLUMNS)


def _zip_reply(entries: list[tuple[str, Path, int]], name: str) -> Reply:
    return Reply(
        body=StreamBody(lambda: zip_chunks(entries), sum(size for _, _, size in entries)),
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{quote(name)}.zip"'},
    )


async def get_file(call: Call) -> Reply:
    def work() -> tuple[Resolved, FileEntry, bytes | None, int]:
        resolved = resolve(call, upto=call.target.owner_level)
        resource = find_resource(call, resolved)
        assert call.target.path is not None
        return resolved, *call.store.read_file(resource.id, call.target.path, _INLINE_LIMIT)

    t = call.target
    key = (t.project, t.subject, t.experiment, t.scan, t.resource, t.path)
    memo = call.state.memo
    known = memo.get(key, call.store.generation)
    if known is None:
        resolved, entry, data, generation = await asyncio.to_thread(work)
        if data is not None:
            memo.put(key, Memoized(resolved.projects, entry, data), generation)
    else:
        for project in known.projects:
            call.check_access(project)
        entry, data = known.entry, known.data
    return Reply(
        body=FileBody(entry.disk_path, entry.size, data),
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{quote(entry.path)}"'},
    )


async def delete_file(call: Call) -> Reply:
    def work() -> None:
        resolved = resolve(call, upto=call.target.owner_level)
        resource = find_resource(call, resolved)
        assert call.target.path is not None
        entry = call.store.find_file(resource.id, call.target.path)
        if entry is None:
            raise NotFoundError(f"file {call.target.path}")
        call.store.delete_file(entry, resource.owner)

    await asyncio.to_thread(work)
    return text(200, "")
