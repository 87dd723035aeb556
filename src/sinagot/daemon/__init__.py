"""The sync daemon: polls dataset servers, processes new or changed sessions, reports on a socket.

Library use::

    from sinagot.daemon import serve
    serve(["lab.toml"], backend_factory=my_factory)   # blocks until SIGTERM

Clients of a running daemon use :class:`ControlClient` and render its answers with
:func:`format_status` and :func:`format_jobs`; :func:`register_commands` adds the
daemon's sub-commands to the ``sinagot`` command.
"""

from __future__ import annotations

from ..engine import Fingerprints, StepMark
from ._backend import (
    BackendFactory,
    DatasetBackend,
    ListedSession,
    ProcessResult,
    SessionInfo,
    backend_for,
)
from ._cli import register as register_commands
from ._client import ControlClient
from ._format import format_job, format_jobs, format_status
from ._serve import serve
from ._service import Daemon
from ._states import FINISHED, DaemonStatus, JobState
from ._systemd import Notifier

__all__ = [
    "FINISHED",
    "BackendFactory",
    "ControlClient",
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
    "format_job",
    "format_jobs",
    "format_status",
    "register_commands",
    "serve",
]
