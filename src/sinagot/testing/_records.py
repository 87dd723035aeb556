"""The emulator's records: what its store holds and returns, and its two errors.

Plain values, safe to pass between threads and to keep after the store changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Literal

from sinagot.errors import EmulatorError

__all__ = [
    "SESSION_ATTRIBUTES",
    "ConflictError",
    "Experiment",
    "FileEntry",
    "NotFoundError",
    "Owner",
    "OwnerKind",
    "Project",
    "Resource",
    "Scan",
    "ScanFile",
    "StagedFile",
    "Subject",
    "check_session_attributes",
    "format_time",
    "safe_relative_path",
]

OwnerKind = Literal["project", "subject", "experiment", "scan"]


class NotFoundError(EmulatorError, LookupError):
    """An object addressed by a request or a seeding call does not exist."""


class ConflictError(EmulatorError):
    """A create or upload clashes with something that already exists."""


def format_time(ms: int) -> str:
    """XNAT's ``YYYY-MM-DD HH:MM:SS.fff`` form of a UTC time in milliseconds."""
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}"


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    description: str
    checksums: bool


@dataclass(frozen=True, slots=True)
class Subject:
    id: str
    project: str
    label: str
    insert_ms: int
    modified_ms: int


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    project: str
    subject_id: str
    subject_label: str
    label: str
    xsi_type: str
    date: str
    insert_ms: int
    modified_ms: int
    time: str
    visit_id: str
    age: str
    modality: str


@dataclass(frozen=True, slots=True)
class Scan:
    experiment_id: str
    id: str
    type: str
    xsi_type: str
    series_description: str
    quality: str
    note: str


@dataclass(frozen=True, slots=True)
class Owner:
    """What a resource hangs off: a project, subject, experiment or scan."""

    kind: OwnerKind
    key: str  # project id, subject id, experiment id, or "<experiment id>/<scan id>"

    @property
    def experiment_id(self) -> str | None:
        if self.kind == "experiment":
            return self.key
        if self.kind == "scan":
            return self.key.split("/", 1)[0]
        return None


@dataclass(frozen=True, slots=True)
class Resource:
    id: int
    owner: Owner
    label: str
    format: str
    content: str
    tags: str


@dataclass(frozen=True, slots=True)
class FileEntry:
    resource_id: int
    path: str
    size: int
    digest: str
    format: str
    content: str
    tags: str
    disk_path: Path


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A file fully written and hashed under a temporary name, waiting to be committed."""

    path: str
    temp: Path
    size: int
    digest: str


@dataclass(frozen=True, slots=True)
class ScanFile:
    """A file of a scan resource, with the scan and resource it belongs to."""

    scan_id: str
    resource_id: int
    resource_label: str
    entry: FileEntry


def safe_relative_path(path: str) -> str:
    """``path`` normalised, or ValueError if it could escape its resource folder."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"unsafe file path {path!r}")
    return "/".join(parts)


#: What a session carries besides its label and subject, as XNAT names it (and the store's
#: columns): the tools built on xnatpy read these, and sort sessions by date and time.
SESSION_ATTRIBUTES = ("date", "time", "visit_id", "age", "modality")


# XNAT parses a date or time with the first of a few patterns that matches the start of
# the value, and ignores the rest (java.text.SimpleDateFormat): a date sent with a time
# part, as xnatpy sends a datetime, keeps its date; a time's fraction of a second and
# zone are dropped. Its patterns for dates are yyyy-MM-dd, MM/dd/yyyy, MM.dd.yyyy and
# yyyyMMdd; for times HH:mm:ss and HHmmss. It stores and answers yyyy-MM-dd and HH:mm:ss.
_DATE_FORMS = (
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)"), (1, 2, 3)),
    (re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?!\d)"), (3, 1, 2)),
    (re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?!\d)"), (3, 1, 2)),
    (re.compile(r"(\d{4})(\d{2})(\d{2})(?!\d)"), (1, 2, 3)),
)
_TIME_FORMS = (
    re.compile(r"(\d{1,2}):(\d{1,2}):(\d{1,2})(?!\d)"),
    re.compile(r"(\d{2})(\d{2})(\d{2})(?!\d)"),
)


def _xnat_date(value: str) -> str:
    for pattern, (year, month, day) in _DATE_FORMS:
        found = pattern.match(value)
        if found is not None:
            # XNAT's parser would roll 2024-02-30 over into March: a client's bug, refused.
            parts = (int(found.group(year)), int(found.group(month)), int(found.group(day)))
            return date(*parts).isoformat()
    raise ValueError(value)


def _xnat_time(value: str) -> str:
    for pattern in _TIME_FORMS:
        found = pattern.match(value)
        if found is not None:
            hour, minute, second = (int(g) for g in found.groups())
            return time(hour, minute, second).isoformat()
    raise ValueError(value)


def _xnat_number(value: str) -> str:
    float(value)
    return value


def check_session_attributes(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` in the forms XNAT stores them, else ValueError.

    Dates and times are read as XNAT reads them (a date's time part and a time's
    fraction of a second are dropped). A value a client cannot parse back (xnatpy
    converts ``date``, ``time`` and ``age`` by the schema's types) would break every
    later read of the session, so it is refused on the way in, as XNAT does.
    """
    unknown = sorted(set(values) - set(SESSION_ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown session attributes {unknown}: use {list(SESSION_ATTRIBUTES)}")
    parsers = {"date": _xnat_date, "time": _xnat_time, "age": _xnat_number}
    checked = dict(values)
    for name, value in values.items():
        parse = parsers.get(name)
        if parse is None or not value:
            continue
        try:
            checked[name] = parse(value)
        except ValueError as exc:
            forms = {
                "date": "YYYY-MM-DD (or MM/DD/YYYY, MM.DD.YYYY, YYYYMMDD)",
                "time": "HH:MM:SS (or HHMMSS)",
                "age": "a number",
            }
            raise ValueError(f"session {name} {value!r} is not {forms[name]}") from exc
    return checked
