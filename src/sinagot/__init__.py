"""Sinagot: run processing scripts on a dataset and keep them in step with its data."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    AccessDeniedError,
    AuthenticationError,
    CacheError,
    CacheFullError,
    CacheLockTimeoutError,
    ChecksumMismatchError,
    ConfigError,
    DaemonError,
    DaemonNotRunningError,
    RecordNotFoundError,
    RemoteNotFoundError,
    ScriptError,
    ServerError,
    SinagotError,
    StoreError,
    UnsafeNameError,
)

try:
    __version__ = version("sinagot")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "CacheError",
    "CacheFullError",
    "CacheLockTimeoutError",
    "ChecksumMismatchError",
    "ConfigError",
    "DaemonError",
    "DaemonNotRunningError",
    "RecordNotFoundError",
    "RemoteNotFoundError",
    "ScriptError",
    "ServerError",
    "SinagotError",
    "StoreError",
    "UnsafeNameError",
    "__version__",
]
