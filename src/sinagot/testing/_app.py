"""The aiohttp application: authentication, faults, counters and the XNAT routes."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import re
import zipfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import BodyPartReader, ClientPayloadError, StreamReader, web

from ._auth import Accounts, AuthFailed
from ._body import FileBody, Reply, StreamBody, send, text, zip_chunks
from ._faults import FaultInjector, FaultRule
from ._memo import FileMemo, Memoized
from ._routes import Target, parse_path, split_prefix
from ._store import (
    ConflictError,
    Experiment,
    FileEntry,
    NotFoundError,
    Owner,
    Project,
    Resource,
    Scan,
    ScanFile,
    Store,
    Subject,
    format_time,
    safe_relative_path,
)
from ._xsd import SCAN_TYPES, SESSION_TYPES, XNAT_XSD

__all__ = ["ADMIN_PREFIX", "build_app"]

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator/"
_UPLOAD_BUFFER = 1024 * 1024
_MAX_SMALL_BODY = 1024 * 1024
# Files up to this size are read along with their index row (one thread hop, and the
# bytes always match the digest); larger ones are streamed from disk with sendfile.
_INLINE_LIMIT = 256 * 1024
_FIELD_PARAM = re.compile(r"(?:^|/)fields/field\[name=([^\]]+)\]/field$")
_STATE: web.AppKey[_State] = web.AppKey("state")


@dataclass(frozen=True, slots=True)
class _State:
    store: Store
    accounts: Accounts
    injector: FaultInjector
    memo: FileMemo


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def build_app(store: Store, accounts: Accounts, injector: FaultInjector) -> web.Application:
    # Uploads are streamed and not subject to this limit; it bounds the small bodies read
    # whole (login forms, admin JSON).
    app = web.Application(client_max_size=_MAX_SMALL_BODY)
    app[_STATE] = _State(store, accounts, injector, FileMemo())
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


# -- entry point -----------------------------------------------------------------------------


async def _dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    if request.path.startswith(ADMIN_PREFIX):
        return await _admin(request, state)
    segments = split_prefix(request.rel_url.raw_path)
    target = parse_path(segments) if segments is not None else None
    template = target.template if target is not None else _plain_template(request.path)
    state.injector.count_request(f"{request.method} {template}")
    fault = state.injector.choose(request.method, request.path)
    if fault is not None and fault.kind == "latency":
        state.injector.count_fault(fault)
        await asyncio.sleep(fault.delay)
    if fault is not None and fault.kind == "status":
        state.injector.count_fault(fault)
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        reply = Reply(
            status=fault.status,
            body=f"injected fault: HTTP {fault.status}".encode(),
            content_type="text/plain",
            headers=headers,
        )
        return await send(request, reply, None, state.injector)
    try:
        reply = await _handle(request, state, segments, target)
    except _HttpError as exc:
        reply = text(exc.status, str(exc))
    except NotFoundError as exc:
        reply = text(404, f"not found: {exc}")
    except ConflictError as exc:
        reply = text(409, str(exc))
    return await send(request, reply, fault, state.injector)


def _plain_template(path: str) -> str:
    if path.startswith("/xapi/schemas/"):
        return "/xapi/schemas/{schema}"
    return path


async def _handle(
    request: web.Request, state: _State, segments: list[str] | None, target: Target | None
) -> Reply:
    path = request.path.rstrip("/") or "/"
    if path == "/":
        return text(200, "Sinagot XNAT emulator")
    if segments == ["services", "auth"] and request.method in ("PUT", "POST"):
        return await _login(request, state)
    user, token = _authenticate(request, state.accounts)
    if token is not None or segments != ["JSESSION"] or request.method == "DELETE":
        return await _handle_authenticated(request, state, segments, target, user, token)
    # Asking for a session with basic auth opens one. Other basic-auth requests do not:
    # clients that ignore cookies would otherwise leave one session per request behind.
    token = state.accounts.open_session(user)
    reply = await _handle_authenticated(request, state, segments, target, user, token)
    headers = {**reply.headers, "Set-Cookie": f"JSESSIONID={token}; Path=/; HttpOnly"}
    return Reply(reply.status, reply.body, reply.content_type, headers)


async def _login(request: web.Request, state: _State) -> Reply:
    form = await request.post()
    user, password = str(form.get("username", "")), str(form.get("password", ""))
    if not state.accounts.check_password(user, password):
        return text(401, "Login attempt failed. Please try again.")
    token = state.accounts.open_session(user)
    return Reply(
        body=token.encode(),
        content_type="text/plain",
        headers={"Set-Cookie": f"JSESSIONID={token}; Path=/; HttpOnly"},
    )


def _authenticate(request: web.Request, accounts: Accounts) -> tuple[str, str | None]:
    """(user, live session token or None); raises 401 for bad or missing credentials."""
    token = request.cookies.get("JSESSIONID")
    session_user = accounts.session_user(token) if token else None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user = accounts.check_basic(header)
        except AuthFailed as exc:
            raise _HttpError(401, f"{exc}: check the user name and password") from exc
        return user, token if session_user == user else None
    if session_user is None:
        raise _HttpError(401, "no valid credentials or session: log in again")
    return session_user, token


async def _handle_authenticated(
    request: web.Request,
    state: _State,
    segments: list[str] | None,
    target: Target | None,
    user: str,
    token: str | None,
) -> Reply:
    method = request.method
    if segments == ["JSESSION"]:
        if method == "DELETE":
            if token is not None:
                state.accounts.close_session(token)
            return text(200, "")
        assert token is not None  # opened by the caller for GET/POST
        return text(200, token)
    if segments == ["auth"]:
        return text(200, f"User '{user}' is logged in")
    if segments == ["search", "elements"]:
        return _json({"ResultSet": {"Result": [], "totalRecords": "0"}})
    path = request.path.rstrip("/")
    if path == "/xapi/siteConfig/buildInfo":
        return _json({"version": "1.8.10", "buildNumber": "sinagot-emulator"})
    if path == "/xapi/schemas":
        return _json(["xnat"])
    if path == "/xapi/schemas/xnat":
        return Reply(body=XNAT_XSD.encode(), content_type="text/xml")
    if target is None:
        raise _HttpError(404, f"no such route {request.path}")
    handler = _HANDLERS.get((target.kind, "GET" if method == "HEAD" else method))
    if handler is None:
        raise _HttpError(405, f"{method} is not supported on {target.template}")
    return await handler(_Call(request, state, target, user))


# -- per-request context and resolution --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    request: web.Request
    state: _State
    target: Target
    user: str

    @property
    def store(self) -> Store:
        return self.state.store

    def param(self, name: str, default: str = "") -> str:
        return self.request.query.get(name, default)

    def flag(self, name: str) -> bool:
        return self.param(name).lower() in ("true", "1", "yes")

    def check_access(self, project: str) -> None:
        if not self.state.accounts.may_access(self.user, project):
            raise _HttpError(403, f"user {self.user!r} has no access to project {project!r}")


@dataclass(frozen=True, slots=True)
class _Resolved:
    project: Project | None = None
    subject: Subject | None = None
    experiment: Experiment | None = None
    scan: Scan | None = None

    @property
    def owner(self) -> Owner:
        if self.scan is not None:
            return Owner("scan", f"{self.scan.experiment_id}/{self.scan.id}")
        if self.experiment is not None:
            return Owner("experiment", self.experiment.id)
        if self.subject is not None:
            return Owner("subject", self.subject.id)
        assert self.project is not None
        return Owner("project", self.project.id)

    @property
    def projects(self) -> frozenset[str]:
        """The projects whose access :func:`_resolve` checked."""
        found = {self.project.id} if self.project is not None else set()
        if self.subject is not None:
            found.add(self.subject.project)
        if self.experiment is not None:
            found.add(self.experiment.project)
        return frozenset(found)

    @property
    def owner_uri(self) -> str:
        assert self.project is not None or self.experiment is not None
        if self.experiment is not None:
            uri = _experiment_uri(self.experiment)
            return uri if self.scan is None else f"{uri}/scans/{_q(self.scan.id)}"
        assert self.project is not None
        base = f"/data/projects/{_q(self.project.id)}"
        return base if self.subject is None else f"{base}/subjects/{_q(self.subject.id)}"

    @property
    def zip_root(self) -> str:
        if self.scan is not None and self.experiment is not None:
            return f"{self.experiment.label}/scans/{self.scan.id}"
        if self.experiment is not None:
            return self.experiment.label
        if self.subject is not None:
            return self.subject.label
        assert self.project is not None
        return self.project.id


def _resolve(call: _Call, *, upto: str) -> _Resolved:
    """Look up the objects of the target down to level ``upto`` (blocking: run in a thread)."""
    store, t = call.store, call.target
    levels = ("project", "subject", "experiment", "scan")
    depth = levels.index(upto)
    project = subject = experiment = None
    scan = None
    if t.project is not None:
        project = store.get_project(t.project)
        if project is None:
            raise NotFoundError(f"project {t.project}")
        call.check_access(project.id)
    if t.subject is not None and depth >= 1:
        subject = store.find_subject(t.project, t.subject)
        if subject is None:
            raise NotFoundError(f"subject {t.subject}")
        call.check_access(subject.project)
    if t.experiment is not None and depth >= 2:
        experiment = store.find_experiment(
            t.project, t.experiment, subject.id if subject is not None else None
        )
        if experiment is None:
            raise NotFoundError(f"experiment {t.experiment}")
        call.check_access(experiment.project)
        if project is None:
            project = store.get_project(experiment.project)
    if t.scan is not None and depth >= 3:
        assert experiment is not None
        scan = store.find_scan(experiment.id, t.scan)
        if scan is None:
            raise NotFoundError(f"scan {t.scan}")
    if project is None and subject is not None:
        project = store.get_project(subject.project)
    return _Resolved(project, subject, experiment, scan)


def _find_resource(call: _Call, resolved: _Resolved) -> Resource:
    assert call.target.resource is not None
    resource = call.store.find_resource(resolved.owner, call.target.resource)
    if resource is None:
        raise NotFoundError(f"resource {call.target.resource}")
    return resource


# -- output helpers ----------------------------------------------------------------------------


def _q(value: str) -> str:
    return quote(value, safe="@+")


def _experiment_uri(experiment: Experiment) -> str:
    return f"/data/projects/{_q(experiment.project)}/experiments/{_q(experiment.id)}"


def _json(data: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(data).encode())


def _listing(call: _Call, rows: list[dict[str, str]], columns: list[str]) -> Reply:
    if call.param("format", "json").lower() == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Reply(body=out.getvalue().encode(), content_type="text/csv")
    result = [{c: row.get(c, "") for c in columns} for row in rows]
    return _json({"ResultSet": {"Result": result, "totalRecords": str(len(result))}})


def _chosen_columns(call: _Call, default: list[str]) -> list[str]:
    requested = [c for c in call.param("columns").split(",") if c]
    if not requested:
        return default
    return list(dict.fromkeys(["ID", *requested, "URI"]))


def _item(xsi_type: str, data_fields: dict[str, str], children: list[Any] | None = None) -> Reply:
    item = {
        "meta": {"xsi:type": xsi_type, "isHistory": False},
        "data_fields": data_fields,
        "children": children or [],
    }
    return _json({"items": [item]})


def _created(identifier: str) -> Reply:
    return Reply(body=identifier.encode(), content_type="text/plain")


# -- projects, subjects, experiments, scans ----------------------------------------------------

_PROJECT_COLUMNS = [
    "ID",
    "secondary_ID",
    "name",
    "description",
    "pi_firstname",
    "pi_lastname",
    "URI",
]
_SUBJECT_COLUMNS = ["ID", "project", "label", "insert_date", "last_modified", "URI"]
_EXPERIMENT_COLUMNS = [
    "ID",
    "project",
    "label",
    "subject_ID",
    "subject_label",
    "xsiType",
    "date",
    "insert_date",
    "last_modified",
    "URI",
]
_SCAN_COLUMNS = [
    "ID",
    "type",
    "quality",
    "xsiType",
    "xnat_imagescandata_id",
    "series_description",
    "note",
    "URI",
]
_RESOURCE_COLUMNS = [
    "xnat_abstractresource_id",
    "label",
    "element_name",
    "category",
    "cat_id",
    "cat_desc",
    "file_count",
    "file_size",
    "format",
    "content",
    "tags",
]
_FILE_COLUMNS = [
    "Name",
    "Size",
    "URI",
    "collection",
    "file_tags",
    "file_format",
    "file_content",
    "cat_ID",
    "digest",
]


def _project_row(project: Project) -> dict[str, str]:
    return {
        "ID": project.id,
        "secondary_ID": project.id,
        "name": project.name,
        "description": project.description,
        "URI": f"/data/projects/{_q(project.id)}",
    }


def _subject_row(subject: Subject) -> dict[str, str]:
    return {
        "ID": subject.id,
        "project": subject.project,
        "label": subject.label,
        "insert_date": format_time(subject.insert_ms),
        "last_modified": format_time(subject.modified_ms),
        "URI": f"/data/projects/{_q(subject.project)}/subjects/{_q(subject.id)}",
    }


def _experiment_row(experiment: Experiment) -> dict[str, str]:
    return {
        "ID": experiment.id,
        "project": experiment.project,
        "label": experiment.label,
        "subject_ID": experiment.subject_id,
        "subject_label": experiment.subject_label,
        "xsiType": experiment.xsi_type,
        "date": experiment.date,
        "insert_date": format_time(experiment.insert_ms),
        "last_modified": format_time(experiment.modified_ms),
        "URI": _experiment_uri(experiment),
    }


def _scan_row(experiment: Experiment, scan: Scan) -> dict[str, str]:
    return {
        "ID": scan.id,
        "type": scan.type,
        "quality": scan.quality,
        "xsiType": scan.xsi_type,
        "xnat_imagescandata_id": f"{experiment.id}_{scan.id}",
        "series_description": scan.series_description,
        "note": scan.note,
        "URI": f"{_experiment_uri(experiment)}/scans/{_q(scan.id)}",
    }


async def _list_projects(call: _Call) -> Reply:
    projects = await asyncio.to_thread(call.store.projects)
    allowed = [p for p in projects if call.state.accounts.may_access(call.user, p.id)]
    return _listing(
        call, [_project_row(p) for p in allowed], _chosen_columns(call, _PROJECT_COLUMNS)
    )


async def _get_project(call: _Call) -> Reply:
    resolved = await asyncio.to_thread(_resolve, call, upto="project")
    assert resolved.project is not None
    row = _project_row(resolved.project)
    del row["URI"]
    return _item("xnat:projectData", row)


async def _put_project(call: _Call) -> Reply:
    assert call.target.project is not None
    if call.state.accounts.access.get(call.user) is not None:
        raise _HttpError(403, f"user {call.user!r} may not create projects")
    project = await asyncio.to_thread(
        call.store.create_project,
        call.target.project,
        call.param("xnat:projectData/name", call.target.project),
        call.param("xnat:projectData/description"),
    )
    return _created(project.id)


async def _list_subjects(call: _Call) -> Reply:
    def work() -> list[Subject]:
        if call.target.project is not None:
            _resolve(call, upto="project")
        subjects = call.store.subjects(call.target.project)
        return [s for s in subjects if call.state.accounts.may_access(call.user, s.project)]

    subjects = await asyncio.to_thread(work)
    return _listing(
        call, [_subject_row(s) for s in subjects], _chosen_columns(call, _SUBJECT_COLUMNS)
    )


async def _get_subject(call: _Call) -> Reply:
    resolved = await asyncio.to_thread(_resolve, call, upto="subject")
    assert resolved.subject is not None
    row = _subject_row(resolved.subject)
    del row["URI"]
    return _item("xnat:subjectData", row)


async def _put_subject(call: _Call) -> Reply:
    def work() -> Subject:
        resolved = _resolve(call, upto="project")
        if resolved.project is None:
            raise _HttpError(400, "create subjects under /data/projects/{project}/subjects")
        assert call.target.subject is not None
        label = call.param("xnat:subjectData/label", call.target.subject)
        return call.store.create_subject(resolved.project.id, label)

    subject = await asyncio.to_thread(work)
    return _created(subject.id)


async def _delete_subject(call: _Call) -> Reply:
    def work() -> None:
        resolved = _resolve(call, upto="subject")
        assert resolved.subject is not None
        call.store.delete_subject(resolved.subject)

    await asyncio.to_thread(work)
    return text(200, "")


async def _list_experiments(call: _Call) -> Reply:
    def work() -> list[Experiment]:
        resolved = _resolve(call, upto="subject")
        subject_id = resolved.subject.id if resolved.subject is not None else None
        experiments = call.store.experiments(call.target.project, subject_id)
        return [e for e in experiments if call.state.accounts.may_access(call.user, e.project)]

    experiments = await asyncio.to_thread(work)
    xsi_type = call.param("xsiType")
    if xsi_type:
        experiments = [e for e in experiments if e.xsi_type == xsi_type]
    label = call.param("label")
    if label:
        experiments = [e for e in experiments if _wildcard(label).fullmatch(e.label)]
    return _listing(
        call, [_experiment_row(e) for e in experiments], _chosen_columns(call, _EXPERIMENT_COLUMNS)
    )


def _wildcard(value: str) -> re.Pattern[str]:
    """XNAT's filter on a listing column: the value, where ``*`` matches any characters."""
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


async def _get_experiment(call: _Call) -> Reply:
    def work() -> tuple[Experiment, dict[str, str], list[Scan]]:
        resolved = _resolve(call, upto="experiment")
        assert resolved.experiment is not None
        experiment = resolved.experiment
        return experiment, call.store.fields(experiment.id), call.store.scans(experiment.id)

    experiment, fields, scans = await asyncio.to_thread(work)
    data = {
        "ID": experiment.id,
        "project": experiment.project,
        "label": experiment.label,
        "subject_ID": experiment.subject_id,
    }
    if experiment.date:
        data["date"] = experiment.date
    children: list[Any] = []
    if fields:
        field_type = f"{experiment.xsi_type}_field"
        items = [
            {
                "meta": {"xsi:type": field_type, "isHistory": False},
                "data_fields": {"name": name, "field": value},
                "children": [],
            }
            for name, value in fields.items()
        ]
        children.append({"field": "fields/field", "items": items})
    if scans:
        items = [
            {
                "meta": {"xsi:type": s.xsi_type, "isHistory": False},
                "data_fields": {"ID": s.id, "type": s.type, "image_session_ID": experiment.id},
                "children": [],
            }
            for s in scans
        ]
        children.append({"field": "scans/scan", "items": items})
    return _item(experiment.xsi_type, data, children)


def _field_updates(call: _Call) -> dict[str, str]:
    updates = {}
    for key, value in call.request.query.items():
        match = _FIELD_PARAM.search(key)
        if match is not None:
            updates[match.group(1)] = value
    return updates


async def _put_experiment(call: _Call) -> Reply:
    xsi_type = call.param("xsiType", "xnat:mrSessionData")

    def work() -> Experiment:
        resolved = _resolve(call, upto="subject")
        assert call.target.experiment is not None
        project = resolved.project
        experiment = call.store.find_experiment(
            project.id if project is not None else None, call.target.experiment
        )
        if experiment is None:
            if project is None:
                raise _HttpError(400, "create experiments under /data/projects/{project}")
            if xsi_type not in SESSION_TYPES:
                raise _HttpError(
                    400, f"unknown xsiType {xsi_type}: use one of {sorted(SESSION_TYPES)}"
                )
            subject_key = (
                resolved.subject.id
                if resolved.subject is not None
                else call.param(f"{xsi_type}/subject_ID") or call.param("subject_ID")
            )
            if not subject_key:
                raise _HttpError(400, "give the subject in the path or as subject_ID")
            subject = call.store.find_subject(project.id, subject_key)
            if subject is None:
                raise NotFoundError(f"subject {subject_key}")
            label = call.param(f"{xsi_type}/label", call.target.experiment)
            experiment = call.store.create_experiment(
                project.id, subject.id, label, xsi_type, call.param(f"{xsi_type}/date")
            )
        else:
            call.check_access(experiment.project)
        call.store.set_fields(experiment.id, _field_updates(call))
        return experiment

    experiment = await asyncio.to_thread(work)
    return _created(experiment.id)


async def _delete_experiment(call: _Call) -> Reply:
    def work() -> None:
        resolved = _resolve(call, upto="experiment")
        assert resolved.experiment is not None
        call.store.delete_experiment(resolved.experiment)

    await asyncio.to_thread(work)
    return text(200, "")


async def _list_scans(call: _Call) -> Reply:
    def work() -> tuple[Experiment, list[Scan]]:
        resolved = _resolve(call, upto="experiment")
        assert resolved.experiment is not None
        return resolved.experiment, call.store.scans(resolved.experiment.id)

    experiment, scans = await asyncio.to_thread(work)
    return _listing(call, [_scan_row(experiment, s) for s in scans], _SCAN_COLUMNS)


async def _get_scan(call: _Call) -> Reply:
    resolved = await asyncio.to_thread(_resolve, call, upto="scan")
    assert resolved.scan is not None and resolved.experiment is not None
    scan = resolved.scan
    data = {
        "ID": scan.id,
        "type": scan.type,
        "quality": scan.quality,
        "series_description": scan.series_description,
        "note": scan.note,
        "image_session_ID": resolved.experiment.id,
    }
    return _item(scan.xsi_type, data)


async def _put_scan(call: _Call) -> Reply:
    xsi_type = call.param("xsiType", "xnat:mrScanData")
    if xsi_type not in SCAN_TYPES:
        raise _HttpError(400, f"unknown xsiType {xsi_type}: use one of {sorted(SCAN_TYPES)}")

    def work() -> Scan:
        resolved = _resolve(call, upto="experiment")
        assert resolved.experiment is not None and call.target.scan is not None
        scan_type = call.param(f"{xsi_type}/type") or call.param("type")
        # xnatpy puts to scans/{type} and passes the ID as a parameter.
        scan_id = call.param(f"{xsi_type}/ID") or call.param(f"{xsi_type}/id") or call.target.scan
        existing = call.store.find_scan(resolved.experiment.id, call.target.scan)
        if existing is not None and scan_id == call.target.scan:
            scan_id = existing.id
        return call.store.create_scan(
            resolved.experiment.id,
            scan_id,
            scan_type,
            xsi_type,
            call.param(f"{xsi_type}/series_description"),
        )

    scan = await asyncio.to_thread(work)
    return _created(scan.id)


async def _delete_scan(call: _Call) -> Reply:
    def work() -> None:
        resolved = _resolve(call, upto="scan")
        assert resolved.scan is not None
        call.store.delete_scan(resolved.scan)

    await asyncio.to_thread(work)
    return text(200, "")


# -- resources and files -----------------------------------------------------------------------


def _resource_row(resource: Resource, totals: tuple[int, int]) -> dict[str, str]:
    return {
        "xnat_abstractresource_id": str(resource.id),
        "label": resource.label,
        "element_name": "xnat:resourceCatalog",
        "category": resource.owner.kind,
        "cat_id": "",
        "cat_desc": "",
        "file_count": str(totals[0]),
        "file_size": str(totals[1]),
        "format": resource.format,
        "content": resource.content,
        "tags": resource.tags,
    }


def _file_row(resource_uri: str, resource_id: int, label: str, entry: FileEntry) -> dict[str, str]:
    return {
        "Name": entry.path.rsplit("/", 1)[-1],
        "Size": str(entry.size),
        "URI": f"{resource_uri}/files/{quote(entry.path, safe='/@+')}",
        "collection": label,
        "file_tags": entry.tags,
        "file_format": entry.format,
        "file_content": entry.content,
        "cat_ID": str(resource_id),
        "digest": entry.digest,
    }


async def _list_resources(call: _Call) -> Reply:
    def work() -> tuple[list[Resource], dict[int, tuple[int, int]]]:
        resolved = _resolve(call, upto=call.target.owner_level)
        resources = call.store.resources(resolved.owner)
        return resources, call.store.totals([r.id for r in resources])

    resources, totals = await asyncio.to_thread(work)
    rows = [_resource_row(r, totals[r.id]) for r in resources]
    return _listing(call, rows, _RESOURCE_COLUMNS)


async def _get_resource(call: _Call) -> Reply:
    def work() -> tuple[Resource, tuple[int, int]]:
        resource = _find_resource(call, _resolve(call, upto=call.target.owner_level))
        return resource, call.store.totals([resource.id])[resource.id]

    resource, totals = await asyncio.to_thread(work)
    row = _resource_row(resource, totals)
    row["ID"] = row["xnat_abstractresource_id"]
    return _item("xnat:resourceCatalog", row)


async def _put_resource(call: _Call) -> Reply:
    def work() -> tuple[Resource, bool]:
        resolved = _resolve(call, upto=call.target.owner_level)
        assert call.target.resource is not None
        return call.store.create_resource(
            resolved.owner,
            call.target.resource,
            call.param("format"),
            call.param("content"),
            call.param("tags"),
        )

    resource, _created_now = await asyncio.to_thread(work)
    return _created(str(resource.id))


async def _delete_resource(call: _Call) -> Reply:
    def work() -> None:
        call.store.delete_resource(
            _find_resource(call, _resolve(call, upto=call.target.owner_level))
        )

    await asyncio.to_thread(work)
    return text(200, "")


async def _list_files(call: _Call) -> Reply:
    def work() -> tuple[_Resolved, Resource, list[FileEntry]]:
        resolved = _resolve(call, upto=call.target.owner_level)
        resource = _find_resource(call, resolved)
        return resolved, resource, call.store.files(resource.id)

    resolved, resource, entries = await asyncio.to_thread(work)
    if call.param("format").lower() == "zip":
        root = f"{resolved.zip_root}/resources/{resource.label}/files"
        return _zip_reply(
            [(f"{root}/{e.path}", e.disk_path, e.size) for e in entries], resource.label
        )
    uri = f"{resolved.owner_uri}/resources/{_q(resource.label)}"
    rows = [_file_row(uri, resource.id, resource.label, e) for e in entries]
    return _listing(call, rows, _FILE_COLUMNS)


async def _session_files(call: _Call) -> Reply:
    """``scans/ALL/files``: every scan file of a session, as one zip or one listing."""
    fmt = call.param("format", "zip").lower()
    if fmt not in ("zip", "json", "csv"):
        raise _HttpError(400, "scans/ALL/files is available with format=zip, json or csv")

    def work() -> tuple[Experiment, list[ScanFile]]:
        experiment = _resolve(call, upto="experiment").experiment
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
    base = f"/data/experiments/{_q(experiment.id)}/scans"
    rows = [
        _file_row(
            f"{base}/{_q(f.scan_id)}/resources/{f.resource_id}",
            f.resource_id,
            f.resource_label,
            f.entry,
        )
        for f in files
    ]
    return _listing(call, rows, _FILE_COLUMNS)


def _zip_reply(entries: list[tuple[str, Path, int]], name: str) -> Reply:
    return Reply(
        body=StreamBody(lambda: zip_chunks(entries)),
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{quote(name)}.zip"'},
    )


async def _get_file(call: _Call) -> Reply:
    def work() -> tuple[_Resolved, FileEntry, bytes | None, int]:
        resolved = _resolve(call, upto=call.target.owner_level)
        resource = _find_resource(call, resolved)
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


async def _delete_file(call: _Call) -> Reply:
    def work() -> None:
        resolved = _resolve(call, upto=call.target.owner_level)
        resource = _find_resource(call, resolved)
        assert call.target.path is not None
        entry = call.store.find_file(resource.id, call.target.path)
        if entry is None:
            raise NotFoundError(f"file {call.target.path}")
        call.store.delete_file(entry, resource.owner)

    await asyncio.to_thread(work)
    return text(200, "")


async def _upload(call: _Call) -> Reply:
    """PUT/POST a file: a raw body (xnatpy, pyxnat ``inbody=true``) or multipart parts."""

    # Resolve (and check access) before reading the body; the resource itself is only
    # created once a complete file is there to commit.
    resolved = await asyncio.to_thread(_resolve, call, upto=call.target.owner_level)
    assert call.target.resource is not None
    overwrite = call.flag("overwrite")
    extract = call.flag("extract")
    options = {
        "fmt": call.param("format"),
        "content": call.param("content"),
        "tags": call.param("tags"),
    }
    request = call.request
    received: list[tuple[str, Path, int, str]] = []
    try:
        try:
            await _receive_all(call, received)
        except (ConnectionResetError, ClientPayloadError) as exc:
            # The client went away mid-body: nothing was committed.
            logger.debug("upload to %s interrupted: %s", request.path, exc)
            raise _HttpError(400, "the upload was interrupted: send the file again") from exc
        await asyncio.to_thread(
            _commit_all,
            call.store,
            resolved.owner,
            call.target.resource,
            received,
            overwrite,
            extract,
            options,
        )
    finally:
        # Committed files were renamed away; whatever is left is a leftover temp file.
        for _name, temp, _size, _digest in received:
            await asyncio.to_thread(temp.unlink, True)
    return text(200, "")


async def _receive_all(call: _Call, received: list[tuple[str, Path, int, str]]) -> None:
    """Stream every file of the request body to temporary files, appending to ``received``."""
    request = call.request
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.filename:
                continue
            name = call.target.path or part.filename
            temp, size, digest = await _receive(call.store, part)
            received.append((name, temp, size, digest))
    else:
        if not call.target.path:
            raise _HttpError(400, "give the file name in the URL: .../files/{name}")
        temp, size, digest = await _receive(call.store, request.content)
        received.append((call.target.path, temp, size, digest))
    if not received:
        raise _HttpError(400, "the upload contained no file")


def _commit_all(
    store: Store,
    owner: Owner,
    label: str,
    received: list[tuple[str, Path, int, str]],
    overwrite: bool,
    extract: bool,
    options: dict[str, str],
) -> None:
    for name, _temp, _size, _digest in received:
        try:
            safe_relative_path(name)
        except ValueError as exc:
            raise _HttpError(400, f"{exc}: use a relative path without '..'") from exc
    resource, _ = store.create_resource(owner, label)
    for name, temp, size, digest in received:
        if extract and name.lower().endswith(".zip"):
            _extract_zip(store, resource, temp, overwrite)
            continue
        store.commit_file(
            resource,
            name,
            temp,
            size,
            digest,
            overwrite=overwrite,
            fmt=options["fmt"],
            content=options["content"],
            tags=options["tags"],
        )


def _extract_zip(store: Store, resource: Resource, archive_path: Path, overwrite: bool) -> None:
    with zipfile.ZipFile(archive_path) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            try:
                name = safe_relative_path(member.filename)
            except ValueError as exc:
                raise _HttpError(400, f"zip member {exc}: fix the archive") from exc
            temp = store.new_upload()
            hasher = hashlib.md5()
            with archive.open(member) as source, temp.open("wb") as target:
                _copy_hashing(source, target, hasher)
            store.commit_file(
                resource, name, temp, member.file_size, hasher.hexdigest(), overwrite=overwrite
            )


def _copy_hashing(source: IO[bytes], target: IO[bytes], hasher: Any) -> None:
    while chunk := source.read(_UPLOAD_BUFFER):
        hasher.update(chunk)
        target.write(chunk)


async def _receive(store: Store, source: StreamReader | BodyPartReader) -> tuple[Path, int, str]:
    """Stream a body into a fresh temporary file, hashing it on the way."""
    temp = store.new_upload()
    hasher = hashlib.md5()
    size = 0
    out: IO[bytes] = await asyncio.to_thread(temp.open, "wb")
    try:
        buffer = bytearray()
        while True:
            if isinstance(source, StreamReader):
                chunk = await source.read(_UPLOAD_BUFFER)
            else:
                chunk = await source.read_chunk(_UPLOAD_BUFFER)
            if chunk:
                buffer += chunk
            if buffer and (not chunk or len(buffer) >= _UPLOAD_BUFFER):
                data = bytes(buffer)
                buffer.clear()
                size += len(data)
                await asyncio.to_thread(_write_hashing, out, hasher, data)
            if not chunk:
                break
        await asyncio.to_thread(out.close)
    except BaseException:
        await asyncio.to_thread(out.close)
        await asyncio.to_thread(temp.unlink, True)
        raise
    return temp, size, hasher.hexdigest()


def _write_hashing(out: IO[bytes], hasher: Any, data: bytes) -> None:
    hasher.update(data)
    out.write(data)


_Handler = Callable[[_Call], Awaitable[Reply]]
_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("projects", "GET"): _list_projects,
    ("project", "GET"): _get_project,
    ("project", "PUT"): _put_project,
    ("subjects", "GET"): _list_subjects,
    ("subject", "GET"): _get_subject,
    ("subject", "PUT"): _put_subject,
    ("subject", "DELETE"): _delete_subject,
    ("experiments", "GET"): _list_experiments,
    ("experiment", "GET"): _get_experiment,
    ("experiment", "PUT"): _put_experiment,
    ("experiment", "DELETE"): _delete_experiment,
    ("scans", "GET"): _list_scans,
    ("scan", "GET"): _get_scan,
    ("scan", "PUT"): _put_scan,
    ("scan", "DELETE"): _delete_scan,
    ("resources", "GET"): _list_resources,
    ("resource", "GET"): _get_resource,
    ("resource", "PUT"): _put_resource,
    ("resource", "POST"): _put_resource,
    ("resource", "DELETE"): _delete_resource,
    ("files", "GET"): _list_files,
    ("files", "PUT"): _upload,
    ("files", "POST"): _upload,
    ("file", "GET"): _get_file,
    ("file", "PUT"): _upload,
    ("file", "POST"): _upload,
    ("file", "DELETE"): _delete_file,
    ("session_files", "GET"): _session_files,
}


# -- admin endpoints ---------------------------------------------------------------------------


async def _admin(request: web.Request, state: _State) -> web.StreamResponse:
    """Fault and counter control; not counted, no auth (the emulator is a loopback test tool)."""
    route = (request.method, request.path.rstrip("/"))
    injector = state.injector
    if route == ("GET", "/_emulator/faults"):
        return web.json_response(
            {"seed": injector.seed, "rules": [r.to_json() for r in injector.rules()]}
        )
    if route == ("POST", "/_emulator/faults"):
        try:
            payload = await request.json()
            rules_data = payload.get("rules", []) if isinstance(payload, dict) else payload
            rules = [FaultRule.from_json(item) for item in _as_list(rules_data)]
            seed = payload.get("seed") if isinstance(payload, dict) else None
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        injector.set_rules(rules, seed)
        return web.json_response({"seed": injector.seed, "rules": [r.to_json() for r in rules]})
    if route == ("GET", "/_emulator/counters"):
        return web.json_response(
            {"requests": injector.request_counts(), "faults": injector.fault_counts()}
        )
    if route == ("POST", "/_emulator/counters/reset"):
        injector.reset_counters()
        return web.json_response({"requests": {}, "faults": {}})
    return web.json_response(
        {"error": f"no admin route {request.method} {request.path}"}, status=404
    )


def _as_list(data: object) -> Iterable[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("fault rules must be a JSON list of objects")
    return data
