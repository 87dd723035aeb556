"""A record's status log: one JSON line per step event, Sinagot 0.1's ``LOG/<id>.log``.

Sinagot 0.1 scripts logged each step's status there (``step_status``: 20 while
processing, 30 done, 40 on error, ...), and ``step.status()`` read the last one to
show a step as PROCESSING or ERROR. Sinagot keeps writing these lines for 0.1
datasets (and beside the steps' logs in its own layout), so an existing dataset
shows what it showed before. Each line is one ``write(2)`` on a file opened with
``O_APPEND``: steps of one record on several workers never mix their lines.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from .._report import StepKey

__all__ = [
    "LOG_ORIGIN",
    "LOG_RECORD_ID",
    "LOG_STEP_LABEL",
    "LOG_STEP_STATUS",
    "LegacyStatus",
    "last_statuses",
    "read_status_log",
    "write_status",
]

_log = logging.getLogger("sinagot.run")

# Sinagot 0.1's field names in the log lines.
LOG_ORIGIN = "log_from"
LOG_STEP_LABEL = "step_label"
LOG_RECORD_ID = "record_id"
LOG_STEP_STATUS = "step_status"


class LegacyStatus(IntEnum):
    """Sinagot 0.1's step statuses (``sinagot.utils.StepStatus``), with their values."""

    INIT = 0  # the step's input is missing
    DATA_READY = 10  # its input is there, its output is not
    PROCESSING = 20
    DONE = 30  # its output is there
    ERROR = 40
    DATA_NOT_AVAILABLE = 41  # a run found its input missing
    # Sinagot 0.1's spelling.
    DATA_NOT_AVIABLE = 41


def write_status(path: Path | None, key: StepKey, status: LegacyStatus, message: str) -> None:
    """Append one status line for step ``key`` to the log at ``path`` (None: no log)."""
    if path is None:
        return
    line = {
        LOG_ORIGIN: "script",
        "scope": "record",
        LOG_RECORD_ID: key.record,
        "task": key.task,
        "modality": key.modality,
        LOG_STEP_LABEL: key.script,
        LOG_STEP_STATUS: int(status),
        "message": message,
        "time": datetime.now().isoformat(),
        "host": socket.gethostname(),
    }
    data = (json.dumps(line) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        # The log only informs status(): a run never fails for it.
        _log.warning("cannot write the status log %s: %s", path, exc)


def read_status_log(path: Path) -> list[dict[str, Any]]:
    """The lines of the status log at ``path`` (none if it is absent); bad lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines: list[dict[str, Any]] = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def last_statuses(path: Path) -> dict[tuple[str, str, str], int]:
    """The last status logged for each (task, modality, script) in the log at ``path``."""
    last: dict[tuple[str, str, str], tuple[str, int]] = {}
    for line in read_status_log(path):
        status = line.get(LOG_STEP_STATUS)
        unit = (line.get("task"), line.get("modality"), line.get(LOG_STEP_LABEL))
        if not isinstance(status, int) or not all(isinstance(v, str) for v in unit):
            continue
        when = str(line.get("time", ""))
        key = (str(unit[0]), str(unit[1]), str(unit[2]))
        if key not in last or when >= last[key][0]:
            last[key] = (when, status)
    return {key: status for key, (_, status) in last.items()}
