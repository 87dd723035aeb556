"""Sinagot 0.1's ``sinagot.utils``: step statuses and the status log's field names.

``StepStatus`` holds 0.1's values (INIT 0, DATA_READY 10, PROCESSING 20, DONE 30,
ERROR 40, DATA_NOT_AVIABLE 41); the results of a run are :class:`sinagot.StepStatus`.
"""

from __future__ import annotations

from pathlib import Path

from .engine import LOG_ORIGIN, LOG_RECORD_ID, LOG_STEP_LABEL, LOG_STEP_STATUS, STATUS_LOG_DIR
from .engine import LegacyStatus as StepStatus

__all__ = [
    "LOG_ORIGIN",
    "LOG_RECORD_ID",
    "LOG_STEP_LABEL",
    "LOG_STEP_STATUS",
    "StepStatus",
    "record_log_file_path",
]


def record_log_file_path(data_path: Path, record_id: str) -> Path:
    """The status log of record ``record_id`` in the Sinagot 0.1 dataset at ``data_path``."""
    return Path(data_path) / STATUS_LOG_DIR / f"{record_id}.log"
