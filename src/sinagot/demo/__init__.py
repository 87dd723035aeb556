"""The demo dataset: recordings, scripts and a config to try Sinagot with."""

from __future__ import annotations

from ._command import CONFIG_NAME, write_demo
from ._data import (
    DEMO_PROJECT,
    DEMO_RECORDS,
    DEMO_TASK_MODALITIES,
    load_demo,
    write_demo_recordings,
)
from ._scripts import DEMO_CONFIG, DEMO_SCRIPTS

__all__ = [
    "CONFIG_NAME",
    "DEMO_CONFIG",
    "DEMO_PROJECT",
    "DEMO_RECORDS",
    "DEMO_SCRIPTS",
    "DEMO_TASK_MODALITIES",
    "load_demo",
    "write_demo",
    "write_demo_recordings",
]
