"""Provenance records: what produced a derivative, and whether it is still up to date.

A derivative is up to date only when its stored provenance says it succeeded
with the same input checksums, script source hash, parameters and Sinagot
version as the step would use now; the existence of output files decides nothing.

Two kinds of provenance say a derivative is complete (``status``):

- ``"success"``: Sinagot ran the script and wrote the outputs;
- ``"adopted"``: in a Sinagot 0.1 dataset, the outputs existed and Sinagot did not
  write them (0.1's DONE): it kept them, and recorded the inputs, script and outputs
  as they were then. From then on it decides reruns like any other.

In a Sinagot 0.1 (free-form) dataset, ``outputs`` are named by their paths in the
dataset and ``folder`` is the folder that holds them all: a remote store holds them
relative to it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .._version import __version__

__all__ = [
    "COMPLETE_STATUSES",
    "STATUS_ADOPTED",
    "STATUS_SUCCESS",
    "build_provenance",
    "is_up_to_date",
    "stale_reason",
    "utc_now",
]

STATUS_SUCCESS = "success"
STATUS_ADOPTED = "adopted"
COMPLETE_STATUSES = frozenset({STATUS_SUCCESS, STATUS_ADOPTED})


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _normalized(value: Mapping[str, Any]) -> Any:
    # Round-trip through JSON so a dict read back from a store compares equal.
    return json.loads(json.dumps(dict(value), sort_keys=True))


def build_provenance(
    *,
    record: str,
    task: str,
    modality: str,
    script: str,
    source_md5: str,
    parameters: Mapping[str, Any],
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    started: str,
    finished: str,
    status: str = STATUS_SUCCESS,
    folder: str | None = None,
) -> dict[str, Any]:
    """The provenance document stored with a derivative (JSON-compatible)."""
    document = {
        "record": record,
        "task": task,
        "modality": modality,
        "script": {"name": script, "source_md5": source_md5},
        "parameters": _normalized(parameters),
        "inputs": dict(sorted(inputs.items())),
        "outputs": dict(sorted(outputs.items())),
        "sinagot_version": __version__,
        "started": started,
        "finished": finished,
        "host": socket.gethostname(),
        "status": status,
    }
    if folder is not None:
        document["folder"] = folder
    return document


def stale_reason(
    stored: Mapping[str, Any] | None,
    *,
    inputs: Mapping[str, str],
    source_md5: str,
    parameters: Mapping[str, Any],
) -> str | None:
    """Why the derivative must be recomputed, or None if ``stored`` is still valid."""
    if stored is None:
        return "never ran"
    if stored.get("status") not in COMPLETE_STATUSES:
        return "last run did not succeed"
    script = stored.get("script")
    if not isinstance(script, Mapping) or script.get("source_md5") != source_md5:
        return "script changed"
    if stored.get("parameters") != _normalized(parameters):
        return "parameters changed"
    if stored.get("inputs") != dict(inputs):
        return "inputs changed"
    if stored.get("sinagot_version") != __version__:
        return "sinagot version changed"
    return None


def is_up_to_date(
    stored: Mapping[str, Any] | None,
    *,
    inputs: Mapping[str, str],
    source_md5: str,
    parameters: Mapping[str, Any],
) -> bool:
    return stale_reason(stored, inputs=inputs, source_md5=source_md5, parameters=parameters) is None
