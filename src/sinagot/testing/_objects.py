"""Handlers of projects, subjects, experiments and scans."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ._body import Reply, text
from ._columns import (
    EXPERIMENT_COLUMNS,
    PROJECT_COLUMNS,
    SCAN_COLUMNS,
    SUBJECT_COLUMNS,
    chosen_columns,
    created_reply,
    experiment_row,
    item_reply,
    listing_reply,
    project_row,
    row_item,
    scan_row,
    subject_row,
)
from ._context import Call, HttpError, resolve
from ._records import (
    SESSION_ATTRIBUTES,
    Experiment,
    NotFoundError,
    Owner,
    Project,
    Scan,
    Subject,
    check_session_attributes,
)
from ._xsd import SCAN_TYPES, SESSION_TYPES

__all__ = [
    "delete_object",
    "get_experiment",
    "get_project",
    "get_scan",
    "get_subject",
    "list_experiments",
    "list_projects",
    "list_scans",
    "list_subjects",
    "put_experiment",
    "put_project",
    "put_scan",
    "put_subject",
]

_FIELD_PARAM = re.compile(r"(?:^|/)fields/field\[name=([^\]]+)\]/field$")


async def list_projects(call: Call) -> Reply:
    projects = await asyncio.to_thread(call.store.projects)
    allowed = [p for p in projects if call.may_access(p.id)]
    return listing_reply(
        call, [project_row(p) for p in allowed], chosen_columns(call, PROJECT_COLUMNS)
    )


async def get_project(call: Call) -> Reply:
    def work() -> tuple[Project, dict[str, str]]:
        project = resolve(call, upto="project").project
        assert project is not None
        return project, call.store.fields(Owner("project", project.id))

    project, fields = await asyncio.to_thread(work)
    return row_item(
        "xnat:projectData", project_row(project), _fields_children("xnat:projectData", fields)
    )


async def put_project(call: Call) -> Reply:
    """Create a project (site admins), or set custom fields of one the user may access."""
    assert call.target.project is not None
    updates = _field_updates(call)

    def work() -> Project:
        assert call.target.project is not None
        project = call.store.get_project(call.target.project)
        if project is None:
            if not call.state.accounts.is_admin(call.user):
                raise HttpError(403, f"user {call.user!r} may not create projects")
            project = call.store.create_project(
                call.target.project,
                call.param("xnat:projectData/name", call.target.project),
                call.param("xnat:projectData/description"),
            )
        else:
            call.check_access(project.id)
        call.store.set_fields(Owner("project", project.id), updates)
        return project

    project = await asyncio.to_thread(work)
    return created_reply(project.id)


async def list_subjects(call: Call) -> Reply:
    def work() -> list[Subject]:
        if call.target.project is not None:
            resolve(call, upto="project")
        subjects = call.store.subjects(call.target.project)
        return [s for s in subjects if call.may_access(s.project)]

    subjects = await asyncio.to_thread(work)
    return listing_reply(
        call, [subject_row(s) for s in subjects], chosen_columns(call, SUBJECT_COLUMNS)
    )


async def get_subject(call: Call) -> Reply:
    def work() -> tuple[Subject, dict[str, str]]:
        subject = resolve(call, upto="subject").subject
        assert subject is not None
        return subject, call.store.fields(Owner("subject", subject.id))

    subject, fields = await asyncio.to_thread(work)
    return row_item(
        "xnat:subjectData", subject_row(subject), _fields_children("xnat:subjectData", fields)
    )


async def put_subject(call: Call) -> Reply:
    """Create (or find) a subject of a project, and set its custom fields; at
    ``/data/subjects/{id}`` only an existing subject's fields."""
    updates = _field_updates(call)

    def work() -> Subject:
        assert call.target.subject is not None
        if call.target.project is None:
            subject = resolve(call, upto="subject").subject
            assert subject is not None
        else:
            project = resolve(call, upto="project").project
            assert project is not None
            label = call.param("xnat:subjectData/label", call.target.subject)
            subject = call.store.create_subject(project.id, label)
        call.store.set_fields(Owner("subject", subject.id), updates)
        return subject

    subject = await asyncio.to_thread(work)
    return created_reply(subject.id)


async def delete_object(call: Call) -> Reply:
    """DELETE a subject, experiment or scan, with everything below it."""

    def work() -> None:
        # Resolved down to the addressed level: the deepest object found is the one to delete.
        resolved = resolve(call, upto=call.target.kind)
        if resolved.scan is not None:
            call.store.delete_scan(resolved.scan)
        elif resolved.experiment is not None:
            call.store.delete_experiment(resolved.experiment)
        else:
            assert resolved.subject is not None
            call.store.delete_subject(resolved.subject)

    await asyncio.to_thread(work)
    return text(200, "")


async def list_experiments(call: Call) -> Reply:
    def work() -> list[Experiment]:
        resolved = resolve(call, upto="subject")
        subject_id = resolved.subject.id if resolved.subject is not None else None
        experiments = call.store.experiments(call.target.project, subject_id)
        return [e for e in experiments if call.may_access(e.project)]

    experiments = await asyncio.to_thread(work)
    xsi_type = call.param("xsiType")
    if xsi_type:
        experiments = [e for e in experiments if e.xsi_type == xsi_type]
    label = call.param("label")
    if label:
        experiments = [e for e in experiments if _wildcard(label).fullmatch(e.label)]
    return listing_reply(
        call, [experiment_row(e) for e in experiments], chosen_columns(call, EXPERIMENT_COLUMNS)
    )


def _wildcard(value: str) -> re.Pattern[str]:
    """XNAT's filter on a listing column: the value, where ``*`` matches any characters."""
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


async def get_experiment(call: Call) -> Reply:
    def work() -> tuple[Experiment, dict[str, str], list[Scan]]:
        resolved = resolve(call, upto="experiment")
        assert resolved.experiment is not None
        experiment = resolved.experiment
        fields = call.store.fields(Owner("experiment", experiment.id))
        return experiment, fields, call.store.scans(experiment.id)

    experiment, fields, scans = await asyncio.to_thread(work)
    data = {
        "ID": experiment.id,
        "project": experiment.project,
        "label": experiment.label,
        "subject_ID": experiment.subject_id,
    }
    # XNAT leaves unset fields out: xnatpy then reads None, which it cannot parse from "".
    for name in SESSION_ATTRIBUTES:
        value = getattr(experiment, name)
        if value:
            data[name] = value
    children = _fields_children(experiment.xsi_type, fields)
    if scans:
        items = [
            {
                "meta": {"xsi:type": s.xsi_type, "isHistory": False},
                "data_fields": {
                    "ID": s.id,
                    "type": s.type,
                    "quality": s.quality,
                    "series_description": s.series_description,
                    "image_session_ID": experiment.id,
                },
                "children": [],
            }
            for s in scans
        ]
        children.append({"field": "scans/scan", "items": items})
    return item_reply(experiment.xsi_type, data, children)


def _fields_children(xsi_type: str, fields: dict[str, str]) -> list[Any]:
    """The ``fields/field`` child of an object, as xnatpy reads custom fields."""
    if not fields:
        return []
    items = [
        {
            "meta": {"xsi:type": f"{xsi_type}_field", "isHistory": False},
            "data_fields": {"name": name, "field": value},
            "children": [],
        }
        for name, value in fields.items()
    ]
    return [{"field": "fields/field", "items": items}]


def _field_updates(call: Call) -> dict[str, str | None]:
    """Custom fields set by ``<xsiType>/fields/field[name=N]/field=V``; ``NULL`` removes one
    (xnatpy deletes a field that way)."""
    updates: dict[str, str | None] = {}
    for key, value in call.request.query.items():
        match = _FIELD_PARAM.search(key)
        if match is not None:
            updates[match.group(1)] = None if value == "NULL" else value
    return updates


async def put_experiment(call: Call) -> Reply:
    xsi_type = call.param("xsiType", "xnat:mrSessionData")
    # xnatpy sets a field as ``<xsiType>/<name>=value`` (``xsess.date = ...``), and
    # unsets it with the value ``NULL``.
    attributes: dict[str, str] = {}
    for name in SESSION_ATTRIBUTES:
        value = call.request.query.get(f"{xsi_type}/{name}")
        if value is not None:
            attributes[name] = "" if value == "NULL" else value
    try:
        attributes = check_session_attributes(attributes)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc

    def work() -> Experiment:
        resolved = resolve(call, upto="subject")
        assert call.target.experiment is not None
        project = resolved.project
        experiment = call.store.find_experiment(
            project.id if project is not None else None, call.target.experiment
        )
        if experiment is None:
            if project is None:
                raise HttpError(400, "create experiments under /data/projects/{project}")
            if xsi_type not in SESSION_TYPES:
                raise HttpError(
                    400, f"unknown xsiType {xsi_type}: use one of {sorted(SESSION_TYPES)}"
                )
            subject_key = (
                resolved.subject.id
                if resolved.subject is not None
                else call.param(f"{xsi_type}/subject_ID") or call.param("subject_ID")
            )
            if not subject_key:
                raise HttpError(400, "give the subject in the path or as subject_ID")
            subject = call.store.find_subject(project.id, subject_key)
            if subject is None:
                raise NotFoundError(f"subject {subject_key}")
            label = call.param(f"{xsi_type}/label", call.target.experiment)
            experiment = call.store.create_experiment(project.id, subject.id, label, xsi_type)
        else:
            call.check_access(experiment.project)
        call.store.set_session_attributes(experiment.id, attributes)
        call.store.set_fields(Owner("experiment", experiment.id), _field_updates(call))
        return experiment

    experiment = await asyncio.to_thread(work)
    return created_reply(experiment.id)


async def list_scans(call: Call) -> Reply:
    def work() -> tuple[Experiment, list[Scan]]:
        resolved = resolve(call, upto="experiment")
        assert resolved.experiment is not None
        return resolved.experiment, call.store.scans(resolved.experiment.id)

    experiment, scans = await asyncio.to_thread(work)
    return listing_reply(call, [scan_row(experiment, s) for s in scans], SCAN_COLUMNS)


async def get_scan(call: Call) -> Reply:
    resolved = await asyncio.to_thread(resolve, call, upto="scan")
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
    return item_reply(scan.xsi_type, data)


async def put_scan(call: Call) -> Reply:
    xsi_type = call.param("xsiType", "xnat:mrScanData")
    if xsi_type not in SCAN_TYPES:
        raise HttpError(400, f"unknown xsiType {xsi_type}: use one of {sorted(SCAN_TYPES)}")

    def work() -> Scan:
        resolved = resolve(call, upto="experiment")
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
            call.param(f"{xsi_type}/quality"),
        )

    scan = await asyncio.to_thread(work)
    return created_reply(scan.id)
