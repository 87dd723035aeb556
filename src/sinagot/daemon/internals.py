"""The daemon's testing API: what tests and benches use below :mod:`sinagot.daemon`.

Declared here so that they import no private module (tests/test_architecture.py checks
it) and a move inside the daemon changes this file, not theirs. Not for product code.
"""

from __future__ import annotations

from . import _cluster as cluster
from ._api import MAX_JOBS_LISTED
from ._cluster import ClusterPool, forget_finished_spans, forget_span_metrics
from ._datasets import ServedDataset
from ._gate import ACCEPT_BATCH, MAX_CONNECTIONS, REQUEST_TIMEOUT
from ._job_records import SCHEMA_VERSION, JobRecord
from ._journal import Journal
from ._memory import malloc_trim, trim_free_memory
from ._paths import SYSTEM_SOCKET
from ._phases import PhaseRelay
from ._poll_pace import PollPace, borrow_limit, fixed_count
from ._polling import Poller, ServerGates, poll_phases
from ._states import (
    ALLOWED_TRANSITIONS,
    IN_FLIGHT,
    PHASES,
    STATUS_TRANSITIONS,
    TRANSITIONS,
    check_status_transition,
)
from ._status_page import banners
from ._xnat_backend import XnatBackend

__all__ = [
    "ACCEPT_BATCH",
    "ALLOWED_TRANSITIONS",
    "IN_FLIGHT",
    "MAX_CONNECTIONS",
    "MAX_JOBS_LISTED",
    "PHASES",
    "REQUEST_TIMEOUT",
    "SCHEMA_VERSION",
    "STATUS_TRANSITIONS",
    "SYSTEM_SOCKET",
    "TRANSITIONS",
    "ClusterPool",
    "JobRecord",
    "Journal",
    "PhaseRelay",
    "PollPace",
    "Poller",
    "ServedDataset",
    "ServerGates",
    "XnatBackend",
    "banners",
    "borrow_limit",
    "check_status_transition",
    "cluster",
    "fixed_count",
    "forget_finished_spans",
    "forget_span_metrics",
    "malloc_trim",
    "poll_phases",
    "trim_free_memory",
]
