"""The sync daemon: polls dataset servers, processes new or changed sessions, reports on a socket.

Library use::

    from sinagot.daemon import serve
    serve(["lab.toml"], backend_factory=my_factory)   # blocks until SIGTERM

Clients of a running daemon (the control client, the command's output, the systemd
unit) live in :mod:`sinagot.cli`.
"""

from __future__ import annotations

from ..engine import Fingerprints, StepMark
from ._backend import (
    BackendFactory,
    DatasetBackend,
    ListedSession,
    ProcessResult,
    SessionInfo,
)
from ._factory import backend_for
from ._paths import client_socket_path
from ._serve import serve
from ._service import Daemon
from ._states import FINISHED, DaemonStatus, JobState, shown_status
from ._systemd import Notifier

__all__ = [
    "FINISHED",
    "BackendFactory",
    "Daemon",
    "DaemonStatus",
    "DatasetBackend",
    "Fingerprints",
    "JobState",
    "ListedSession",
    "Notifier",
    "ProcessResult",
    "SessionInfo",
    "StepMark",
    "backend_for",
    "client_socket_path",
    "serve",
    "shown_status",
]
