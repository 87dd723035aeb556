"""What the emulator answers: XNAT's listing columns and rows, as JSON or CSV, and single objects."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import quote

from ._body import Reply, json_reply
from ._context import Call
from ._records import Experiment, FileEntry, Project, Resource, Scan, Subject, format_time
from ._routes import experiment_uri, uri_part

__all__ = [
    "EXPERIMENT_COLUMNS",
    "FILE_COLUMNS",
    "PROJECT_COLUMNS",
    "RESOURCE_COLUMNS",
    "SCAN_COLUMNS",
    "SUBJECT_COLUMNS",
    "chosen_columns",
    "created_reply",
    "experiment_row",
    "file_row",
    "item_reply",
    "listing_reply",
    "project_row",
    "resource_row",
    "row_item",
    "scan_row",
    "subject_row",
]


def listing_reply(call: Call, rows: list[dict[str, str]], columns: list[str]) -> Reply:
    if call.param("format", "json").lower() == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Reply(body=out.getvalue().encode(), content_type="text/csv")
    result = [{c: row.get(c, "") for c in columns} for row in rows]
    return json_reply({"ResultSet": {"Result": result, "totalRecords": str(len(result))}})


def chosen_columns(call: Call, default: list[str]) -> list[str]:
    requested = [c for c in call.param("columns").split(",") if c]
    if not requested:
        return default
    return list(dict.fromkeys(["ID", *requested, "URI"]))


def item_reply(
    xsi_type: str, data_fields: dict[str, str], children: list[Any] | None = None
) -> Reply:
    item = {
        "meta": {"xsi:type": xsi_type, "isHistory": False},
        "data_fields": data_fields,
        "children": children or [],
    }
    return json_reply({"items": [item]})


def row_item(xsi_type: str, row: dict[str, str], children: list[Any] | None = None) -> Reply:
    """A project or subject as its own object: its listing row, less the URI."""
    data = {name: value for name, value in row.items() if name != "URI"}
    return item_reply(xsi_type, data, children)


def created_reply(identifier: str) -> Reply:
    return Reply(body=identifier.encode(), content_type="text/plain")


PROJECT_COLUMNS = [
    "ID",
    "secondary_ID",
    "name",
    "description",
    "pi_firstname",
    "pi_lastname",
    "URI",
]
SUBJECT_COLUMNS = ["ID", "project", "label", "insert_date", "last_modified", "URI"]
EXPERIMENT_COLUMNS = [
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
SCAN_COLUMNS = [
    "ID",
    "type",
    "quality",
    "xsiType",
    "xnat_imagescandata_id",
    "series_description",
    "note",
    "URI",
]
RESOURCE_COLUMNS = [
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
FILE_COLUMNS = [
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


def project_row(project: Project) -> dict[str, str]:
    return {
        "ID": project.id,
        "secondary_ID": project.id,
        "name": project.name,
        "description": project.description,
        "URI": f"/data/projects/{uri_part(project.id)}",
    }


def subject_row(subject: Subject) -> dict[str, str]:
    return {
        "ID": subject.id,
        "project": subject.project,
        "label": subject.label,
        "insert_date": format_time(subject.insert_ms),
        "last_modified": format_time(subject.modified_ms),
        "URI": f"/data/projects/{uri_part(subject.project)}/subjects/{uri_part(subject.id)}",
    }


def experiment_row(experiment: Experiment) -> dict[str, str]:
    return {
        "ID": experiment.id,
        "project": experiment.project,
        "label": experiment.label,
        "subject_ID": experiment.subject_id,
        "subject_label": experiment.subject_label,
        "xsiType": experiment.xsi_type,
        "date": experiment.date,
        "time": experiment.time,
        "visit_id": experiment.visit_id,
        "age": experiment.age,
        "modality": experiment.modality,
        "insert_date": format_time(experiment.insert_ms),
        "last_modified": format_time(experiment.modified_ms),
        "URI": experiment_uri(experiment),
    }


def scan_row(experiment: Experiment, scan: Scan) -> dict[str, str]:
    return {
        "ID": scan.id,
        "type": scan.type,
        "quality": scan.quality,
        "xsiType": scan.xsi_type,
        "xnat_imagescandata_id": f"{experiment.id}_{scan.id}",
        "series_description": scan.series_description,
        "note": scan.note,
        "URI": f"{experiment_uri(experiment)}/scans/{uri_part(scan.id)}",
    }


def resource_row(resource: Resource, totals: tuple[int, int]) -> dict[str, str]:
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


def file_row(resource_uri: str, resource_id: int, label: str, entry: FileEntry) -> dict[str, str]:
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
