"""The demo dataset: recordings, scripts and a config to try Sinagot with."""

from __future__ import annotations

from ._data import DEMO_RECORDS, DEMO_TASK_MODALITIES, write_demo_recordings

__all__ = ["DEMO_RECORDS", "DEMO_TASK_MODALITIES", "write_demo_recordings"]
