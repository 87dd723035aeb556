"""XNAT REST paths: parsed into targets (with the route templates used as counter keys),
and the URIs that listings give for objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from ._records import Experiment

__all__ = ["Target", "experiment_uri", "parse_path", "split_prefix", "uri_part"]

TargetKind = Literal[
    "projects",
    "project",
    "subjects",
    "subject",
    "experiments",
    "experiment",
    "scans",
    "scan",
    "resources",
    "resource",
    "files",
    "file",
    "session_files",
]

_PREFIXES: tuple[tuple[str, ...], ...] = (("data", "archive"), ("data",), ("REST",))
_CHILDREN: dict[str, tuple[str, ...]] = {
    "root": ("projects", "subjects", "experiments"),
    "project": ("subjects", "experiments", "resources"),
    "subject": ("experiments", "resources"),
    "experiment": ("scans", "resources"),
    "scan": ("resources",),
    "resource": ("files",),
}
_SINGULAR = {
    "projects": "project",
    "subjects": "subject",
    "experiments": "experiment",
    "scans": "scan",
    "resources": "resource",
}


@dataclass(frozen=True, slots=True)
class Target:
    """What a ``/data/...`` path addresses; ``template`` is its route with placeholders."""

    kind: TargetKind
    template: str
    project: str | None = None
    subject: str | None = None
    experiment: str | None = None
    scan: str | None = None
    resource: str | None = None
    path: str | None = None

    @property
    def owner_level(self) -> str:
        """The level owning the resources addressed (for resource/file targets)."""
        if self.scan is not None:
            return "scan"
        if self.experiment is not None:
            return "experiment"
        if self.subject is not None:
            return "subject"
        return "project"


def split_prefix(raw_path: str) -> list[str] | None:
    """Decoded path segments after a ``/data``-like prefix, or None for other paths."""
    segments = [_decode(s) for s in raw_path.strip("/").split("/")]
    for prefix in _PREFIXES:
        if tuple(segments[: len(prefix)]) == prefix:
            return segments[len(prefix) :]
    return None


def _decode(segment: str) -> str:
    # pyxnat encodes labels up to three times on create calls (``@`` arrives as
    # ``%252540``) and once elsewhere; decoding until stable names the same object.
    # XNAT labels never contain a literal ``%``, so nothing real is lost.
    for _ in range(4):
        decoded = unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def parse_path(segments: list[str]) -> Target | None:
    """The target of the segments after the prefix, or None if no object route matches."""
    level = "root"
    template = "/data"
    values: dict[str, str] = {}
    index = 0
    while index < len(segments):
        collection = segments[index]
        if collection not in _CHILDREN.get(level, ()):
            return None
        template += f"/{collection}"
        index += 1
        if collection == "files":
            if index == len(segments):
                return _target("files", template, values)
            values["path"] = "/".join(segments[index:])
            return _target("file", template + "/{path}", values)
        if index == len(segments):
            return _target(collection, template, values)  # type: ignore[arg-type]
        level = _SINGULAR[collection]
        if level == "scan" and segments[index] == "ALL":
            if segments[index + 1 :] == ["files"]:
                return _target("session_files", template + "/ALL/files", values)
            return None
        values[level] = segments[index]
        template += f"/{{{level}}}"
        index += 1
    if level == "root":
        return None
    return _target(level, template, values)  # type: ignore[arg-type]


def _target(kind: TargetKind, template: str, values: dict[str, str]) -> Target:
    return Target(kind=kind, template=template, **values)


def uri_part(value: str) -> str:
    """A path segment of a listing URI; clients reuse these URIs verbatim."""
    return quote(value, safe="@+")


def experiment_uri(experiment: Experiment) -> str:
    return f"/data/projects/{uri_part(experiment.project)}/experiments/{uri_part(experiment.id)}"
