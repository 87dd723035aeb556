"""The sync daemon: polls dataset servers, processes new or changed sessions, reports on a socket.

Library use::

    from sinagot.daemon import serve
    serve(["lab.toml"], backend_factory=my_factory)   # blocks until SIGTERM

Clients of a running daemon use :class:`ControlClient`.
"""

from __future__ import annotations

from ._backend import BackendFactory, DatasetBackend, ProcessResult, SessionInfo, backend_for
from ._client import ControlClient
from ._serve import serve
from ._service import Daemon
from ._states import DaemonStatus, JobState

__all__ = [
    "BackendFactory",
    "ControlClient",
    "Daemon",
    "DaemonStatus",
    "DatasetBackend",
    "JobState",
    "ProcessResult",
    "SessionInfo",
    "backend_for",
    "serve",
]
