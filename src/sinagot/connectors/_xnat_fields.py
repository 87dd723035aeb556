"""Session fields and frameset definitions on XNAT: small JSON values beside the files.

A field ``name@pipeline`` is a custom field of the session (``name___at___pipeline``);
a frameset definition is a JSON file of a project resource.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from ..errors import RemoteNotFoundError, ServerError
from ._data_model import DataEntry, validate_label
from ._store import FieldValue
from ._xnat_client import XnatClient
from ._xnat_names import DEFINITIONS_RESOURCE, decode_value, quote_segment, resource_label

__all__ = [
    "UPLOAD_PARAMS",
    "definition_path",
    "download_value",
    "get_json_object",
    "load_definition",
    "save_definition",
    "upload_value",
]

UPLOAD_PARAMS = MappingProxyType({"overwrite": "true", "inbody": "true"})


async def _session_document(client: XnatClient, session_path: str, label: str) -> dict[str, Any]:
    document = await client.get_json(session_path, f"session {label}")
    try:
        item = document["items"][0]
    except (KeyError, IndexError, TypeError):
        item = None
    if not isinstance(item, dict):
        raise ServerError(f"the description of session {label} has no items: check the server")
    return item


def _objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list in a server's answer: nothing of any other shape."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


async def download_value(client: XnatClient, session_path: str, entry: DataEntry) -> FieldValue:
    wanted = resource_label(entry.path).lower()
    item = await _session_document(client, session_path, entry.row_id)
    for child in _objects(item.get("children")):
        if child.get("field") != "fields/field":
            continue
        for field_item in _objects(child.get("items")):
            fields = field_item.get("data_fields")
            if isinstance(fields, dict) and str(fields.get("name", "")).lower() == wanted:
                return decode_value(str(fields.get("field", "")))
    raise RemoteNotFoundError(f"field {entry.path} of session {entry.row_id} has no value yet")


async def upload_value(
    client: XnatClient,
    session_path: str,
    entry: DataEntry,
    value: FieldValue,
    xsi_type: str,
    default_xsi_type: str,
) -> None:
    """Set the field; ``xsi_type``: the session's type from a listing ("" to ask the server)."""
    if not xsi_type:
        item = await _session_document(client, session_path, entry.row_id)
        meta = item.get("meta")
        given = str(meta.get("xsi:type", "")) if isinstance(meta, dict) else ""
        xsi_type = given or default_xsi_type
    field = resource_label(entry.path)
    await client.request(
        "PUT",
        session_path,
        f"session {entry.row_id}",
        params={
            "xsiType": xsi_type,
            f"{xsi_type}/fields/field[name={field}]/field": json.dumps(value),
        },
    )


def definition_path(project_path: str, name: str) -> str:
    file = quote_segment(validate_label(name, "definition name") + ".json")
    return f"{project_path}/resources/{DEFINITIONS_RESOURCE}/files/{file}"


async def save_definition(
    client: XnatClient, path: str, definition: dict[str, Any], what: str
) -> None:
    body = (json.dumps(definition, indent=2, sort_keys=True) + "\n").encode()
    await client.request("PUT", path, f"definition {what}", params=UPLOAD_PARAMS, body=body)


async def get_json_object(client: XnatClient, path: str, what: str) -> dict[str, Any] | None:
    """The JSON object in the file at ``path``: None if there is no such file, ServerError
    if it holds something else."""
    try:
        data = await client.request("GET", path, what)
    except RemoteNotFoundError:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ServerError(f"{what} is not a JSON object")
    return document


async def load_definition(client: XnatClient, path: str, what: str) -> dict[str, Any] | None:
    try:
        return await get_json_object(client, path, f"definition {what}")
    except ServerError as exc:
        raise ServerError(f"{exc}: save it again") from None
