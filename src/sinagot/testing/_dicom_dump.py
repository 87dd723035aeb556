"""XNAT's DICOM dump service: ``GET /data/services/dicomdump?src=...``.

``src`` names a session, a scan, or a file of a scan's resource, with or without
XNAT's ``/archive`` prefix (``/archive/projects/P/subjects/S/experiments/E/scans/4``,
``/projects/P/experiments/E/scans/4``, ``/experiments/E``). The header of one DICOM
file is answered as a listing with XNAT's columns: ``tag1`` (``(0008,0060)``),
``tag2`` (the element's tag inside a sequence item, else empty), ``vr``, ``value``
and ``desc``. For a session or scan the file is the first of its scans' resources
labelled ``DICOM``; none: an empty listing, as XNAT answers. ``field`` (repeatable)
keeps the rows of the tags it names, by keyword or eight hex digits.

As XNAT renders them (dcm4che): a sequence gives, for each item, a row of its own
and one per element of the item; values of several items are joined with ``\\``
and cut at 64 characters; text is HTML-escaped; the pixel data is not read.
Parsing uses pydicom, an optional dependency (``pip install 'sinagot[emulator]'``).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ._body import Reply
from ._columns import listing_reply
from ._context import AppState, Call, HttpError, Resolved, resolve
from ._records import FileEntry, NotFoundError, Owner
from ._routes import Target, parse_path

__all__ = ["DUMP_COLUMNS", "dicom_dump"]

DUMP_COLUMNS = ["tag1", "tag2", "vr", "value", "desc"]
#: What XNAT looks for DICOM files in: resources of this label.
DICOM_RESOURCE = "DICOM"
# dcm4che's default length of a value in a header dump.
_VALUE_LENGTH = 64
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


async def dicom_dump(request: web.Request, state: AppState, user: str) -> Reply:
    src = request.query.get("src", "")
    if not src:
        raise HttpError(400, "Please set the src parameter")
    target = _source_target(src)
    call = Call(request, state, target, user)
    fields = _fields(request.query.getall("field", []))
    rows = await asyncio.to_thread(_dump, call, fields)
    return listing_reply(call, rows, DUMP_COLUMNS)


def _source_target(src: str) -> Target:
    segments = [part for part in src.split("/") if part]
    if segments[:1] == ["archive"]:
        segments = segments[1:]
    target = parse_path(segments)
    if target is None or target.kind not in ("experiment", "scan", "file"):
        raise HttpError(
            400,
            f"src {src!r} names no session, scan or file: give /archive/projects/{{project}}"
            "/subjects/{subject}/experiments/{session}[/scans/{scan}]",
        )
    if target.kind == "file" and target.scan is None:
        raise HttpError(400, f"src {src!r}: the DICOM dump reads files of scan resources only")
    return target


def _fields(values: list[str]) -> frozenset[int] | None:
    """The tags ``field`` parameters name (keyword or hex; a shadow header's ``:NAME`` is
    ignored), or None for all of them."""
    if not values:
        return None
    datadict = _pydicom().datadict
    tags = set()
    for value in values:
        name = value.split(":", 1)[0]
        tag = datadict.tag_for_keyword(name)
        if tag is None:
            try:
                tag = int(name, 16)
            except ValueError:
                raise HttpError(400, f"not a valid DICOM attribute tag: {name}") from None
        tags.add(tag)
    return frozenset(tags)


def _dump(call: Call, fields: frozenset[int] | None) -> list[dict[str, str]]:
    resolved = resolve(call, upto="scan" if call.target.scan is not None else "experiment")
    entry = _first_dicom_file(call, resolved)
    if entry is None:
        return []
    pydicom = _pydicom()
    try:
        dataset = pydicom.dcmread(entry.disk_path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise HttpError(500, f"{entry.path} is not a DICOM file XNAT could read: {exc}") from None
    return list(_rows(dataset, fields))


def _first_dicom_file(call: Call, resolved: Resolved) -> FileEntry | None:
    store, target = call.store, call.target
    experiment = resolved.experiment
    assert experiment is not None
    scans = [resolved.scan] if resolved.scan is not None else store.scans(experiment.id)
    for scan in scans:
        assert scan is not None
        owner = Owner("scan", f"{experiment.id}/{scan.id}")
        if target.kind == "file":
            assert target.resource is not None and target.path is not None
            resource = store.find_resource(owner, target.resource)
            entry = None if resource is None else store.find_file(resource.id, target.path)
            if entry is None:
                raise NotFoundError(f"file {target.path} of resource {target.resource}")
            return entry
        for resource in store.resources(owner):
            if resource.label == DICOM_RESOURCE:
                files = store.files(resource.id)
                if files:
                    return files[0]
    return None


def _rows(dataset: Any, fields: frozenset[int] | None) -> Iterator[dict[str, str]]:
    for element in dataset:
        if fields is not None and int(element.tag) not in fields:
            continue
        tag = _tag(element.tag)
        if element.VR != "SQ":
            yield _row(tag, "", element)
            continue
        for item in element.value:
            yield _row(tag, tag, element)
            for inner in item:
                yield _row(tag, _tag(inner.tag), inner)


def _row(tag1: str, tag2: str, element: Any) -> dict[str, str]:
    value = "" if element.VR == "SQ" else _value(element)
    return {
        "tag1": tag1,
        "tag2": tag2,
        "vr": str(element.VR),
        "value": _escape(value),
        "desc": _escape(element.name),
    }


def _tag(tag: Any) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _value(element: Any) -> str:
    value = element.value
    if value is None or value == b"" or value == "":
        return ""
    if element.VR in _BINARY_VRS and isinstance(value, bytes):
        text = "\\".join(f"{byte:02X}" for byte in value[: _VALUE_LENGTH // 3 + 1])
    elif element.VR == "AT":
        values = value if element.VM > 1 else [value]
        text = "\\".join(_tag(v) for v in values)
    elif element.VM > 1:
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    if len(text) > _VALUE_LENGTH:
        return text[:_VALUE_LENGTH] + "..."
    return text


def _escape(text: str) -> str:
    return html.escape(text, quote=False).replace('"', "&quot;")


def _pydicom() -> Any:
    try:
        import pydicom
        import pydicom.datadict
        import pydicom.errors
    except ImportError:
        raise HttpError(
            501,
            "the emulator's DICOM dump needs pydicom: pip install 'sinagot[emulator]'",
        ) from None
    return pydicom
