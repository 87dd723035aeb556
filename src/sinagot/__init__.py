"""Sinagot: run processing scripts on a dataset and keep them in step with its data."""

from __future__ import annotations

from ._report import RunReport, StepResult, StepStatus
from ._version import __version__
from .config import Settings, load_settings
from .dataset import Dataset, Record, RecordCollection, Subset
from .errors import (
    AccessDeniedError,
    ArgumentError,
    AuthenticationError,
    CacheError,
    CacheFullError,
    CacheLockTimeoutError,
    ChecksumMismatchError,
    ConfigError,
    DaemonError,
    DaemonNotRunningError,
    InvalidTransitionError,
    NoModalityError,
    NotFoundError,
    NotificationError,
    NotUnitError,
    RecordNotFoundError,
    RemoteNotFoundError,
    RequestRefusedError,
    ScopeError,
    ScriptError,
    ServerError,
    SinagotError,
    StoreError,
    UnsafeNameError,
)
from .scripts import ScriptTemplate

__all__ = [
    "AccessDeniedError",
    "ArgumentError",
    "AuthenticationError",
    "CacheError",
    "CacheFullError",
    "CacheLockTimeoutError",
    "ChecksumMismatchError",
    "ConfigError",
    "DaemonError",
    "DaemonNotRunningError",
    "Dataset",
    "InvalidTransitionError",
    "NoModalityError",
    "NotFoundError",
    "NotUnitError",
    "NotificationError",
    "Record",
    "RecordCollection",
    "RecordNotFoundError",
    "RemoteNotFoundError",
    "RequestRefusedError",
    "RunReport",
    "ScopeError",
    "ScriptError",
    "ScriptTemplate",
    "ServerError",
    "Settings",
    "SinagotError",
    "StepResult",
    "StepStatus",
    "StoreError",
    "Subset",
    "UnsafeNameError",
    "__version__",
    "load_settings",
]
