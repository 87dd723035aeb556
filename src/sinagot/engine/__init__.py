"""The engine: a scope's records taken through their phases, and the Python API on it.

One module per phase, each importing only those below it::

    _dataset    Dataset, Subset, Record: the library's face (0.1's API too)
    _stepview   0.1's step and status views of a dataset
    _phases     run_scope: the phases in order, RunHooks, runner_for
    _fetch      rows listed, inputs fetched and linked into the work tree
    _ledger     which steps are up to date, from the last run's fingerprints
    _fingerprints  what a pipeline change makes stale
    _plan       a spec per step: input checksums, what is stale
    _run        the steps on a runner, serially or on Dask
    _dask       Dask clients and clusters
    _publish    results stored, or left pending and uploaded last
    _steps      one step executed in its staging folder, moved into place
    _worktree   where a dataset's files lie on disk
    _freeform   0.1's free-form layout
    _status_log 0.1's status log
    _scripts    users' scripts loaded and their paths shaped
    _provenance the provenance document of a step's result
    _checksums  checksums of input files, remembered by size and time

Other packages import this module only (the import contracts check it); tests use
:mod:`sinagot.engine.internals`.
"""

from __future__ import annotations

from ._dask import check_available, open_client
from ._dataset import Dataset, Record, RecordCollection, Subset
from ._dataset import _Scope as ScopeBase
from ._fingerprints import FingerprintProbe, Fingerprints, PipelineChange, StepMark
from ._phases import RunHooks, RunOutcome, run_scope, runner_for
from ._plan import Scope
from ._publish import Publication
from ._run import DaskRunner, Progress
from ._scripts import ScriptTemplate
from ._status_log import LOG_ORIGIN, LOG_RECORD_ID, LOG_STEP_LABEL, LOG_STEP_STATUS, LegacyStatus
from ._stepview import Step, StepCollection
from ._worktree import STATUS_LOG_DIR, WorkTree, detect_layout

__all__ = [
    "LOG_ORIGIN",
    "LOG_RECORD_ID",
    "LOG_STEP_LABEL",
    "LOG_STEP_STATUS",
    "STATUS_LOG_DIR",
    "DaskRunner",
    "Dataset",
    "FingerprintProbe",
    "Fingerprints",
    "LegacyStatus",
    "PipelineChange",
    "Progress",
    "Publication",
    "Record",
    "RecordCollection",
    "RunHooks",
    "RunOutcome",
    "Scope",
    "ScopeBase",
    "ScriptTemplate",
    "Step",
    "StepCollection",
    "StepMark",
    "Subset",
    "WorkTree",
    "check_available",
    "detect_layout",
    "open_client",
    "run_scope",
    "runner_for",
]
