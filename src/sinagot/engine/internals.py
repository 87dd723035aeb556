"""The engine's testing API: what tests and benches use below :mod:`sinagot.engine`.

Declared here so that they import no private module (tests/test_architecture.py checks
it) and a move inside the engine changes this file, not theirs. Not for product code.
"""

from __future__ import annotations

from .._layout import PENDING_DIR
from . import _checksums as checksums
from ._checksums import ChecksumCache
from ._dask import check_available, local_cluster_options, open_client
from ._provenance import build_provenance, is_up_to_date, stale_reason
from ._publish import publish_pending
from ._run import Commit, Progress, SerialRunner, Watch
from ._scripts import (
    ScriptPaths,
    ScriptTemplate,
    format_paths,
    load_script,
    records_layout_problem,
    shape_paths,
)
from ._steps import StepSpec

__all__ = [
    "PENDING_DIR",
    "ChecksumCache",
    "Commit",
    "Progress",
    "ScriptPaths",
    "ScriptTemplate",
    "SerialRunner",
    "StepSpec",
    "Watch",
    "build_provenance",
    "check_available",
    "checksums",
    "format_paths",
    "is_up_to_date",
    "load_script",
    "local_cluster_options",
    "open_client",
    "publish_pending",
    "records_layout_problem",
    "shape_paths",
    "stale_reason",
]
