"""The engine: :func:`run_scope` takes the records of a scope through their phases.

::

    fetch     rows listed from the store; each input entry fetched and linked into
              the work tree once; stored (or pending) provenance read      (``_fetch``)
    plan      a spec per step: input checksums, what is stale               (``_plan``)
    run       the steps on a runner, serially or on Dask, each result
              committed as it finishes: stored at once, or left pending     (``_run``)
    publish   with deferred publication, pending results uploaded,
              provenance last                                               (``_publish``)

The library runs a scope with results stored as they come; the daemon defers
publication to the last phase and follows the phases through :class:`RunHooks`
(its journal records each), with a cancel switch for timeouts and shutdown.
Only the calling thread talks to the store; steps touch only the work tree.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._report import RunReport, StepResult, StepStatus
from ..config import Settings
from ..connectors import DataRow, Store
from ..errors import SinagotError
from ._checksums import ChecksumCache
from ._fetch import fetch_record
from ._fingerprints import (
    Fingerprints,
    pipeline_fingerprints,
)
from ._ledger import record_ledger, up_to_date
from ._plan import RecordPlan, Scope, StepGraph, step_spec
from ._publish import Publication, commit_result, publish_pending
from ._run import DaskRunner, Progress, Runner, SerialRunner, Watch
from ._steps import StepSpec
from ._worktree import WorkTree

__all__ = ["RunHooks", "RunOutcome", "run_scope", "runner_for"]

_log = logging.getLogger("sinagot.run")


def _nothing() -> None:
    return None


def _no_progress(done: int, total: int) -> None:
    del done, total


@dataclass(frozen=True, slots=True)
class RunHooks:
    """What the caller of a run hears of it, and how it stops it; called in the run's thread.

    ``fetching``, ``running`` and ``publishing`` are called as each phase starts
    (``publishing`` only when publication is deferred); ``fetched(done, total)`` and
    ``progress(done, total)`` count the records fetched and the steps run, from 0 as
    their phase starts; once ``cancel`` is set, unfinished steps fail as cancelled.
    """

    fetching: Callable[[], None] = _nothing
    running: Callable[[], None] = _nothing
    publishing: Callable[[], None] = _nothing
    progress: Progress = _no_progress
    fetched: Progress = _no_progress
    cancel: threading.Event | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A run's report, the rows as the store listed them, (deferred publication) what was
    published for each record, for each record that got derivatives the change marker
    the store settled at after them (see :meth:`Store.settle`), and the fingerprints of
    the pipeline the run planned with (see ``_fingerprints``)."""

    report: RunReport
    rows: Mapping[str, DataRow]
    publications: Mapping[str, Publication] = field(default_factory=dict)
    settled: Mapping[str, str | None] = field(default_factory=dict)
    fingerprints: Fingerprints = field(default_factory=Fingerprints)


def runner_for(settings: Settings, mode: str | None = None, client: Any | None = None) -> Runner:
    """The runner of ``mode`` (default: the config's ``[run] mode``); ``client``: an existing
    ``distributed.Client`` to run on (implies Dask; the caller owns it)."""
    if client is not None or (mode or settings.run_mode) == "dask":
        return DaskRunner(settings.dask, client)
    return SerialRunner()


@dataclass(slots=True)
class _Prepared:
    """The records of a run: fetched and planned, or known up to date without a request."""

    rows: dict[str, DataRow] = field(default_factory=dict)
    plans: dict[str, RecordPlan] = field(default_factory=dict)
    specs: list[StepSpec] = field(default_factory=list)
    unchanged: dict[str, list[StepResult]] = field(default_factory=dict)
    fingerprints: Fingerprints = field(default_factory=Fingerprints)


def _fetch_and_plan(
    settings: Settings,
    store: Store,
    tree: WorkTree,
    scope: Scope,
    listed: Mapping[str, str | None],
    *,
    force: bool,
    use_pending: bool,
    counted: Progress,
) -> _Prepared:
    graph = StepGraph(settings, freeform=tree.freeform)
    pipeline = settings.store.pipeline
    run_id = uuid.uuid4().hex[:12]
    prepared = _Prepared(fingerprints=pipeline_fingerprints(graph))
    with ChecksumCache(store.local_root) as cache:
        counted(0, len(scope.records))
        for done, record in enumerate(scope.records, 1):
            plan = prepared.plans[record] = graph.plan(record, scope)
            if (
                not force
                and not plan.pinned
                and up_to_date(store.local_root, plan, listed.get(record), prepared.fingerprints)
            ):
                prepared.unchanged[record] = [
                    StepResult(step.key, StepStatus.UP_TO_DATE, reason="record unchanged")
                    for step in plan.steps
                ]
                counted(done, len(scope.records))
                continue
            row = prepared.rows[record] = DataRow(id=record)
            store.populate_row(row)
            fetched = fetch_record(
                store, tree, row, plan, pipeline=pipeline, use_pending=use_pending
            )
            prepared.specs.extend(
                step_spec(
                    plan,
                    step,
                    fetched,
                    tree=tree,
                    store_root=store.local_root,
                    run_id=run_id,
                    force=force,
                    settings=settings,
                    cache=cache,
                )
                for step in plan.steps
            )
            counted(done, len(scope.records))
        if cache.hashed:
            _log.info("hashed %d changed input files", cache.hashed)
    if prepared.unchanged:
        _log.info("%d record(s) unchanged since their last run", len(prepared.unchanged))
    return prepared


def run_scope(
    settings: Settings,
    store: Store,
    scope: Scope,
    *,
    runner: Runner,
    force: bool = False,
    defer_publication: bool = False,
    script_timeout: float | None = None,
    hooks: RunHooks | None = None,
    listed: Mapping[str, str | None] | None = None,
    tree: WorkTree | None = None,
) -> RunOutcome:
    """Run every step of ``scope`` that is not up to date, through the phases above.

    ``tree``: where the scripts read and write, and in which layout (default: the
    records layout in the store's local tree).

    ``defer_publication``: leave finished steps pending, take earlier pending
    results as stored, and publish them all in a last phase. ``script_timeout``
    bounds each script on Dask. ``listed``: each record's change marker as the
    store listed it just before (see ``_ledger``): a record whose steps were all up
    to date at that marker, and have not changed, is reported so without a request.
    """
    hooks = hooks or RunHooks()
    listed = listed or {}
    tree = tree or WorkTree(store.local_root)
    begin = time.perf_counter()
    hooks.fetching()
    prepared = _fetch_and_plan(
        settings,
        store,
        tree,
        scope,
        listed,
        force=force,
        use_pending=defer_publication,
        counted=hooks.fetched,
    )
    rows, pipeline = prepared.rows, settings.store.pipeline

    def commit(result: StepResult) -> StepResult:
        return commit_result(store, rows, pipeline, result, defer=defer_publication, tree=tree)

    hooks.running()
    hooks.progress(0, len(prepared.specs))
    ran = runner.run(prepared.specs, commit, hooks.progress, Watch(script_timeout, hooks.cancel))
    by_record: dict[str, list[StepResult]] = dict(prepared.unchanged)
    for result in ran:
        if result.key not in prepared.plans[result.key.record].pinned:
            by_record.setdefault(result.key.record, []).append(result)
    results = [result for record in scope.records for result in by_record.get(record, [])]
    report = RunReport(tuple(results), seconds=time.perf_counter() - begin, mode=runner.mode)
    publications: dict[str, Publication] = {}
    if defer_publication:
        hooks.publishing()
        publications = {
            record: publish_pending(store, row, tree=tree) for record, row in rows.items()
        }
        stored = {record for record, done in publications.items() if done.uploaded}
        failed = {record for record, done in publications.items() if done.errors}
    else:
        stored = {
            r.key.record
            for r in ran
            if r.provenance is not None and r.status is not StepStatus.FAILED
        }
        failed = set()
    settled = {record: _settle(store, rows[record]) for record in sorted(stored)}
    for record in rows:
        stamp = settled[record] if record in stored else listed.get(record)
        # A script-filtered run checks steps it does not run: it proves nothing of them.
        if record not in failed and scope.script is None:
            record_ledger(
                store.local_root,
                prepared.plans[record],
                by_record.get(record, []),
                stamp,
                prepared.fingerprints,
            )
    return RunOutcome(report, rows, publications, settled, prepared.fingerprints)


def _settle(store: Store, row: DataRow) -> str | None:
    try:
        return store.settle(row)
    except SinagotError as exc:
        # Not fatal: the record is done for the stamp it was listed with.
        _log.warning("%s: cannot learn its change marker after the upload: %s", row.id, exc)
        return None
