"""How XNAT names, lists and describes what a project holds: labels, URIs, listing rows.

Pure functions over what the server sent: every name from the server is
validated here before it can reach the disk.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar
from urllib.parse import quote, unquote

from ..cache import RemoteFile
from ..errors import ServerError
from ._data_model import split_derivative_path, validate_label, validate_relative_path
from ._store import FieldValue

__all__ = [
    "AT",
    "DEFINITIONS_RESOURCE",
    "EXPERIMENT_COLUMNS",
    "FILE_IN_URI",
    "PROVENANCE_FILE",
    "PROVENANCE_RESOURCE",
    "SessionListing",
    "by_uri",
    "decode_value",
    "derivative_urls",
    "file_name",
    "output_prefix",
    "project_path",
    "quote_segment",
    "remote_file",
    "resource_label",
    "same_files",
    "scan_resource_uri",
    "session_path",
]

T = TypeVar("T")

# Where a derivative's provenance (its commit marker) lives: FrameTree's session resource,
# one <resource label>.json per derivative. Sinagot before 0.2 kept it as this file inside
# the derivative's own resource: still read, replaced at the next upload.
PROVENANCE_RESOURCE = "PROVENANCE"
PROVENANCE_FILE = "provenance.json"
DEFINITIONS_RESOURCE = "sinagot_framesets"
AT = "___at___"
EXPERIMENT_COLUMNS = "ID,label,xsiType,last_modified,insert_date"
FILE_IN_URI = re.compile(r"/scans/([^/]+)/resources/([^/]+)/files/")
_FILE_PATH = re.compile(r"/resources/[^/]+/files/(.+)$")


def resource_label(path: str) -> str:
    """The XNAT resource label of derivative ``name@pipeline`` (``name___at___pipeline``)."""
    name, pipeline = split_derivative_path(path)
    return f"{name}{AT}{pipeline}"


def output_prefix(names: Iterable[str]) -> str:
    """The folder holding all of a derivative's outputs (``"RS/EEG"`` for
    ``RS/EEG/spectrum.json``): its resource holds them relative to it, as FrameTree
    expects a column's files."""
    parents = [posixpath.dirname(name) for name in names]
    return posixpath.commonpath(parents) if parents else ""


def quote_segment(segment: str) -> str:
    return quote(segment, safe="")


def project_path(project: str) -> str:
    return f"/data/projects/{quote_segment(project)}"


def session_path(project: str, label: str) -> str:
    label = validate_label(label, "session label")
    return f"{project_path(project)}/experiments/{quote_segment(label)}"


def derivative_urls(server: str, project: str, session: str, path: str) -> tuple[str, str]:
    """Where a browser finds derivative ``path`` (``name@pipeline``) of a session on the
    server: the files of its resource, and its provenance (FrameTree's layout)."""
    base = server.rstrip("/") + session_path(project, session)
    label = resource_label(path)
    return (
        f"{base}/resources/{quote_segment(label)}/files",
        f"{base}/resources/{PROVENANCE_RESOURCE}/files/{quote_segment(label + '.json')}",
    )


class SessionListing(NamedTuple):
    """One session of a project listing: its label and the server's modification time."""

    label: str
    last_modified: str


def file_name(uri: str, fallback: str) -> str:
    """The path of a file inside its resource, from its listing URI (Name is only the basename)."""
    match = _FILE_PATH.search(uri)
    name = unquote(match.group(1)) if match else fallback
    return validate_relative_path(name, "file name from the server")


def remote_file(row: Mapping[str, str], name: str, what: str) -> RemoteFile:
    try:
        size = int(row.get("Size") or 0)
    except ValueError:
        raise ServerError(
            f"the server lists {name} of {what} with size {row.get('Size')!r}"
        ) from None
    return RemoteFile(name=name, size=size, digest=row.get("digest", ""))


def scan_resource_uri(session: str, scan: str, label: str) -> str:
    return f"{session}/scans/{quote_segment(scan)}/resources/{quote_segment(label)}"


def by_uri(
    session: str, files: Mapping[tuple[str, str], Sequence[RemoteFile]]
) -> dict[str, tuple[RemoteFile, ...]]:
    return {
        scan_resource_uri(session, scan, label): tuple(listed)
        for (scan, label), listed in files.items()
    }


def same_files(
    before: Mapping[str, Sequence[RemoteFile]], after: Mapping[str, Sequence[RemoteFile]]
) -> bool:
    """Whether two scan-file listings show the same content: the same files with the same
    digests (by their sizes alone where the server gives no digest)."""

    def proof(listing: Mapping[str, Sequence[RemoteFile]]) -> dict[str, set[RemoteFile]]:
        return {uri: set(files) for uri, files in listing.items() if files}

    return proof(before) == proof(after)


def decode_value(text: str) -> FieldValue:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, int | float | str | list):
        return value
    return text
