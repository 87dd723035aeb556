"""The TOML configuration, validated once into immutable settings.

Every mistake is reported as one :class:`~sinagot.errors.ConfigError` line that
names the file, the key and the fix. Relative paths are taken relative to the
config file, so a config works from any current directory.
"""

from __future__ import annotations

from ._load import load_settings, load_store_settings, name_problem
from ._settings import (
    JOBQUEUE_CLUSTERS,
    CacheSettings,
    DaemonSettings,
    DaskSettings,
    FileMatch,
    ModalitySettings,
    NotifySettings,
    RunMode,
    Settings,
    StoreSettings,
    TaskSettings,
)

__all__ = [
    "JOBQUEUE_CLUSTERS",
    "CacheSettings",
    "DaemonSettings",
    "DaskSettings",
    "FileMatch",
    "ModalitySettings",
    "NotifySettings",
    "RunMode",
    "Settings",
    "StoreSettings",
    "TaskSettings",
    "load_settings",
    "load_store_settings",
    "name_problem",
]
