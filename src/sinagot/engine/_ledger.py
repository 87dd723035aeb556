"""The ledger: which steps of a record were up to date, at which server change marker.

Checking a step over a remote store costs requests: the record's listing, its
derivatives' provenance. When a record's change marker (XNAT's session
``last_modified``, from the one-request project listing) is the one at which every
step of a run was last up to date, and no step's fingerprint changed (see
``_fingerprints``), nothing about it can have changed: the run reports its
steps up to date without a single request. The ledger is a small JSON file per
record in the work tree (``derivatives/.uptodate.json``), written after runs in
which none of the record's steps failed; losing it only costs requests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._fs import atomic_write_bytes
from .._layout import derivatives_dir
from .._report import StepResult, StepStatus
from ._fingerprints import Fingerprints
from ._plan import RecordPlan

__all__ = ["record_ledger", "up_to_date"]

_log = logging.getLogger("sinagot.run")

LEDGER_NAME = ".uptodate.json"
# Steps whose result says nothing went wrong: the record is as its data and scripts say.
_SETTLED = frozenset({StepStatus.RAN, StepStatus.UP_TO_DATE, StepStatus.MISSING_INPUT})


def _file(root: Path, record: str) -> Path:
    return derivatives_dir(root, record) / LEDGER_NAME


def _read(root: Path, record: str) -> dict[str, list[str]]:
    try:
        document = json.loads(_file(root, record).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        name: entry
        for name, entry in document.items()
        if isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)
    }


def up_to_date(root: Path, plan: RecordPlan, stamp: str | None, marks: Fingerprints) -> bool:
    """Whether every step of ``plan`` was up to date at ``stamp`` and has not changed since."""
    if not stamp or not plan.steps:
        return False
    ledger = _read(root, plan.record)
    for step in plan.steps:
        mark = marks.steps.get(step.key.unit)
        if mark is None or ledger.get(step.key.name) != [stamp, mark.full]:
            return False
    return True


def record_ledger(
    root: Path,
    plan: RecordPlan,
    results: Iterable[StepResult],
    stamp: str | None,
    marks: Fingerprints,
) -> None:
    """Note the steps of ``plan`` as up to date at ``stamp``, if none of them went wrong."""
    outcome: Mapping[str, StepStatus] = {r.key.name: r.status for r in results}
    if not stamp or any(outcome.get(s.key.name) not in _SETTLED for s in plan.steps):
        return
    ledger = _read(root, plan.record)
    for step in plan.steps:
        mark = marks.steps.get(step.key.unit)
        if mark is not None:
            ledger[step.key.name] = [stamp, mark.full]
    try:
        atomic_write_bytes(_file(root, plan.record), json.dumps(ledger, sort_keys=True).encode())
    except OSError as exc:
        # Only an optimisation: the next run asks the store instead.
        _log.warning("cannot record that %s is up to date: %s", plan.record, exc)
