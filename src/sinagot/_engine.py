"""The engine: plan the steps of a scope, run them serially or on Dask, commit results.

Planning and committing happen in the calling process, which alone talks to
the store; :func:`sinagot._steps.execute_step` decides and runs each step
wherever the runner puts it.

A run either commits each finished step to the store at once, or (for the
daemon, whose upload is a phase of its own) leaves it *pending*: outputs in
the work tree plus ``derivatives/.pending/<name@pipeline>.json`` holding the
provenance to publish. A later run treats a pending provenance as the stored
one, so a crash between running and uploading never reruns a script whose
inputs did not change; :func:`publish_pending` uploads them.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._checksums import ChecksumCache
from ._dask import open_client
from ._fs import atomic_write_bytes, fsync_dir, link_or_copy, md5_file
from ._report import RunReport, StepKey, StepResult, StepStatus
from ._steps import StepSpec, attempt_marker, execute_step, list_files, remove_dead_staging
from .config import DaskSettings, Settings
from .connectors import DERIVATIVES_DIR, DataRow, FileSet, Store, derivative_path
from .errors import ScriptError, SinagotError, StoreError
from .scripts import LoadedScript, format_paths, load_script

__all__ = ["PENDING_DIR", "Progress", "Publication", "Scope", "publish_pending", "run_scope"]

_log = logging.getLogger("sinagot.run")

Progress = Callable[[int, int], None]

# Dask re-runs a task that raised this many times; a dying worker is handled by
# the scheduler's own allowed-failures count.
_DASK_RETRIES = 2
# How often a Dask run checks for timed-out scripts and cancellation.
_WATCH_INTERVAL = 0.5

PENDING_DIR = ".pending"


@dataclass(frozen=True, slots=True)
class Scope:
    """Which steps to run: optional filters on record, task and modality."""

    records: tuple[str, ...]
    task: str | None = None
    modality: str | None = None


@dataclass(slots=True)
class _Planned:
    key: StepKey
    script: LoadedScript | None = None
    error: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    upstream: list[StepKey] = field(default_factory=list)


def _pending_dir(root: Path, record: str) -> Path:
    return root / record / DERIVATIVES_DIR / PENDING_DIR


def _pending_file(root: Path, record: str, path: str) -> Path:
    return _pending_dir(root, record) / f"{path}.json"


def _read_pending(file: Path) -> dict[str, Any] | None:
    """A pending publication ``{"path": ..., "provenance": {...}}``, or None if absent or bad."""
    try:
        document = json.loads(file.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        _log.warning("ignoring the unreadable pending publication %s", file)
        return None
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("path"), str)
        or not isinstance(document.get("provenance"), dict)
    ):
        _log.warning("ignoring the malformed pending publication %s", file)
        return None
    return document


def _drop_pending(file: Path) -> None:
    try:
        file.unlink()
    except FileNotFoundError:
        return
    fsync_dir(file.parent)


def _materialize(fileset: FileSet, destination: Path) -> None:
    """Make the files of ``fileset`` visible under ``destination`` (no-op if already there)."""
    # Cheap path comparison first: this runs for every input of every step.
    if fileset.root == destination or (
        destination.is_dir() and os.path.samefile(fileset.root, destination)
    ):
        return
    for name in fileset.names:
        link_or_copy(fileset.root / name, destination / name)


class _Planner:
    """Builds the StepSpecs of one run; only this object talks to the store before running."""

    def __init__(self, settings: Settings, store: Store, force: bool, use_pending: bool) -> None:
        self.settings = settings
        self.store = store
        self.root = store.local_root
        self.force = force
        self.use_pending = use_pending
        self.run_id = uuid.uuid4().hex[:12]
        self.scripts: dict[tuple[str, str], LoadedScript | ScriptError] = {}
        self.fetched: dict[tuple[str, str], FileSet | None] = {}

    def script(self, modality: str, name: str) -> LoadedScript | ScriptError:
        cache_key = (modality, name)
        if cache_key not in self.scripts:
            try:
                self.scripts[cache_key] = load_script(
                    self.settings.script_file(modality, name), modality, name
                )
            except ScriptError as exc:
                _log.error("%s", exc)
                self.scripts[cache_key] = exc
        return self.scripts[cache_key]

    def record_steps(self, record: str) -> list[_Planned]:
        """Every step of ``record`` in dependency order (config order breaks ties)."""
        planned: list[_Planned] = []
        for task in self.settings.tasks.values():
            for modality in task.modalities:
                for name in self.settings.modalities[modality].scripts_for(task.name):
                    step = _Planned(StepKey(record, task.name, modality, name))
                    loaded = self.script(modality, name)
                    if isinstance(loaded, ScriptError):
                        step.error = str(loaded)
                    else:
                        step.script = loaded
                        step.inputs = format_paths(loaded.path_in, record, task.name)
                        step.outputs = format_paths(loaded.path_out, record, task.name)
                    planned.append(step)
        producers: dict[str, _Planned] = {}
        for step in planned:
            for output in step.outputs:
                other = producers.setdefault(output, step)
                if other is not step and step.error is None:
                    step.error = f"{step.key.unit} writes {output}, already written by {other.key.unit}: rename one output"
        for step in planned:
            for path in step.inputs:
                producer = producers.get(path)
                if producer is not None and producer.key not in step.upstream:
                    step.upstream.append(producer.key)
        return _toposort(planned)

    def checksums(
        self, cache: ChecksumCache, local_path: str, known: dict[str, str]
    ) -> dict[str, str]:
        target = self.root / local_path
        if not target.exists():
            return {}
        result: dict[str, str] = {}
        for relative in list_files(target):
            name = f"{local_path}/{relative}" if relative else local_path
            result[name] = known.get(name) or cache.md5(self.root / name)
        return result

    def primary(self, row: DataRow, local_path: str) -> tuple[dict[str, str], str | None]:
        """Fetch the acquired data holding ``local_path``; return server checksums or why missing."""
        parts = local_path.split("/")
        if len(parts) < 3:
            return {}, None
        entry_path = f"{parts[1]}/{parts[2]}"
        cache_key = (row.id, entry_path)
        if cache_key not in self.fetched:
            entry = row.entry(entry_path)
            fileset = None
            if entry is not None:
                fileset = self.store.get_fileset(entry)
                _materialize(fileset, self.root / row.id / parts[1] / parts[2])
            self.fetched[cache_key] = fileset
        entry = row.entry(entry_path)
        if self.fetched[cache_key] is None or entry is None:
            return {}, f"no {entry_path} data for {row.id}"
        prefix = f"{row.id}/{entry_path}/"
        return {prefix + name: md5 for name, md5 in entry.checksums.items()}, None

    def stored_provenance(self, row: DataRow, key: StepKey) -> dict[str, Any] | None:
        path = derivative_path(key.name, self.settings.store.pipeline)
        if self.use_pending:
            # Newer than what the store holds: its outputs wait in the work tree.
            pending = _read_pending(_pending_file(self.root, row.id, path))
            if pending is not None:
                provenance: dict[str, Any] = pending["provenance"]
                return provenance
        entry = row.entry(path)
        return None if entry is None else self.store.get_fileset_provenance(entry)

    def ensure_outputs(self, row: DataRow, key: StepKey, provenance: dict[str, Any]) -> str | None:
        """Bring a finished upstream's outputs into the work tree; why it is stale, if so."""
        derivatives = self.root / row.id / DERIVATIVES_DIR
        names = list(provenance.get("outputs", {}))
        if all((derivatives / name).is_file() for name in names):
            return None
        entry = row.entry(derivative_path(key.name, self.settings.store.pipeline))
        if entry is not None:
            try:
                _materialize(self.store.get_fileset(entry), derivatives)
            except StoreError as exc:
                _log.warning("cannot fetch the outputs of %s: %s", key, exc)
        if all((derivatives / name).is_file() for name in names):
            return None
        return "outputs missing"

    def specs(self, row: DataRow, scope: Scope, cache: ChecksumCache) -> list[StepSpec]:
        remove_dead_staging(self.root / row.id / DERIVATIVES_DIR)
        steps = self.record_steps(row.id)
        wanted = {
            step.key
            for step in steps
            if scope.task in (None, step.key.task) and scope.modality in (None, step.key.modality)
        }
        by_key = {step.key: step for step in steps}
        # Upstream steps outside the scope still run (or are checked) first.
        pending = list(wanted)
        while pending:
            for upstream in by_key[pending.pop()].upstream:
                if upstream not in wanted:
                    wanted.add(upstream)
                    pending.append(upstream)
        selected = [step for step in steps if step.key in wanted]
        has_dependents = {key for step in selected for key in step.upstream}
        return [self.spec(row, step, by_key, has_dependents, cache) for step in selected]

    def spec(
        self,
        row: DataRow,
        step: _Planned,
        by_key: dict[StepKey, _Planned],
        has_dependents: set[StepKey],
        cache: ChecksumCache,
    ) -> StepSpec:
        base = StepSpec(
            key=step.key,
            local_root=self.root,
            run_id=self.run_id,
            script_file=self.settings.script_file(step.key.modality, step.key.script),
            upstream=tuple(step.upstream),
            force=self.force,
        )
        if step.error is not None or step.script is None:
            return replace(base, error=step.error or "script not loaded")
        produced = {
            path: producer
            for producer in step.upstream
            for path in step.inputs
            if path in by_key[producer].outputs
        }
        static: dict[str, str] = {}
        missing: str | None = None
        try:
            for path in step.inputs:
                if path in produced:
                    continue
                known: dict[str, str] = {}
                if not path.startswith(f"{row.id}/{DERIVATIVES_DIR}/"):
                    known, missing = self.primary(row, path)
                    if missing is not None:
                        break
                found = self.checksums(cache, path, known)
                if not found:
                    missing = f"{path} does not exist"
                    break
                static.update(found)
            stored = self.stored_provenance(row, step.key)
            stale = None
            if stored is not None and step.key in has_dependents:
                stale = self.ensure_outputs(row, step.key, stored)
        except (SinagotError, OSError) as exc:
            return replace(base, error=f"preparing inputs failed: {exc}")
        return replace(
            base,
            source_md5=step.script.source_md5,
            parameters=dict(step.script.parameters),
            path_in=step.script.path_in,
            path_out=step.script.path_out,
            outputs=step.outputs,
            produced_inputs=produced,
            static_checksums=static,
            missing=missing,
            stale=stale,
            stored_provenance=stored,
        )


def _toposort(steps: list[_Planned]) -> list[_Planned]:
    order = {step.key: index for index, step in enumerate(steps)}
    waiting = {step.key: len(step.upstream) for step in steps}
    dependents: dict[StepKey, list[StepKey]] = {step.key: [] for step in steps}
    for step in steps:
        for upstream in step.upstream:
            dependents[upstream].append(step.key)
    ready = [order[key] for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    result: list[_Planned] = []
    while ready:
        step = steps[heapq.heappop(ready)]
        result.append(step)
        for dependent in dependents[step.key]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, order[dependent])
    if len(result) < len(steps):
        cycle = sorted((s for s in steps if waiting[s.key] > 0), key=lambda s: order[s.key])
        names = ", ".join(s.key.unit for s in cycle)
        for step in cycle:
            # Their inputs depend on each other: none of them can ever run.
            step.error = f"dependency cycle between {names}: change PATH_IN/PATH_OUT to break it"
            step.upstream = []
            result.append(step)
    return result


def _store_derivative(
    store: Store, row: DataRow, path: str, outputs: Iterable[str], provenance: dict[str, Any]
) -> None:
    """Upload a derivative's outputs then, last, its provenance (which marks them complete)."""
    entry = row.entry(path) or store.create_fileset_entry(path, row)
    root = store.local_root / row.id / DERIVATIVES_DIR
    store.put_fileset(FileSet(root=root, names=tuple(sorted(outputs))), entry)
    store.put_fileset_provenance(provenance, entry)


def _commit(
    store: Store, rows: dict[str, DataRow], pipeline: str, result: StepResult, *, defer: bool
) -> StepResult:
    """Store a finished step, or (``defer``) record it as pending publication."""
    if result.status is not StepStatus.RAN or result.provenance is None:
        return result
    row = rows[result.key.record]
    path = derivative_path(result.key.name, pipeline)
    pending = _pending_file(store.local_root, row.id, path)
    try:
        if defer:
            document = {"path": path, "provenance": result.provenance}
            atomic_write_bytes(pending, json.dumps(document, sort_keys=True).encode())
        else:
            _store_derivative(store, row, path, result.outputs, result.provenance)
            # An older pending result of this step is superseded by what was just stored.
            _drop_pending(pending)
    except (SinagotError, OSError) as exc:
        error = f"storing outputs failed: {exc}"
        _log.error("Step %s: %s", result.key, error)
        return replace(result, status=StepStatus.FAILED, error=error)
    return result


@dataclass(frozen=True, slots=True)
class Publication:
    """What :func:`publish_pending` did for one record (derivative paths ``name@pipeline``)."""

    uploaded: tuple[str, ...] = ()
    already_stored: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def _check_pending(root: Path, file: Path) -> tuple[str, dict[str, Any]] | str:
    """The derivative path and provenance of a pending result, or why it cannot be published."""
    document = _read_pending(file)
    if document is None:
        return f"{file} is not a pending publication: it was dropped, the step reruns"
    path: str = document["path"]
    provenance: dict[str, Any] = document["provenance"]
    outputs = provenance.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return f"{file} lists no outputs: it was dropped, the step reruns"
    for name, md5 in outputs.items():
        output = root / name
        if not output.is_file() or md5_file(output) != md5:
            return (
                f"output {name} of {path} changed in the work tree {root} before its upload:"
                " the pending result was dropped, the step reruns"
            )
    return path, provenance


def publish_pending(store: Store, row: DataRow) -> Publication:
    """Upload the pending results of ``row`` (see the module docstring), provenance last.

    ``row`` must be populated from the store. A pending result whose outputs no
    longer match its provenance is dropped (the next run reruns the step) and
    reported in ``errors``, as are failed uploads (kept pending, to try again);
    a result the store already holds is not uploaded again.
    """
    uploaded: list[str] = []
    already: list[str] = []
    errors: list[str] = []
    root = store.local_root / row.id / DERIVATIVES_DIR
    folder = _pending_dir(store.local_root, row.id)
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        checked = _check_pending(root, file)
        if isinstance(checked, str):
            _drop_pending(file)
            errors.append(checked)
            continue
        path, provenance = checked
        try:
            entry = row.entry(path)
            if entry is not None and store.get_fileset_provenance(entry) == provenance:
                # Uploaded before a crash that came before the pending file was removed.
                already.append(path)
            else:
                _store_derivative(store, row, path, provenance["outputs"], provenance)
                uploaded.append(path)
        except (SinagotError, OSError) as exc:
            errors.append(f"uploading {path} of {row.id} failed: {exc}")
            continue
        _drop_pending(file)
        _log.info("%s: %s %s", row.id, "published" if path in uploaded else "already stored", path)
    return Publication(tuple(uploaded), tuple(already), tuple(errors))


def _run_serial(
    specs: Sequence[StepSpec], commit: Callable[[StepResult], StepResult], progress: Progress
) -> list[StepResult]:
    results: dict[StepKey, StepResult] = {}
    for done, spec in enumerate(specs, start=1):
        result = execute_step(spec, *(results[key] for key in spec.upstream))
        results[spec.key] = commit(result)
        progress(done, len(specs))
    return list(results.values())


def _started_at(spec: StepSpec) -> float | None:
    """When the script of ``spec`` started (its attempt marker's mtime), if it runs."""
    try:
        return attempt_marker(spec).stat().st_mtime
    except FileNotFoundError:
        return None


def _future_result(future: Any, spec: StepSpec, errored: set[StepKey]) -> StepResult:
    try:
        result: StepResult = future.result()
    except Exception as exc:
        # The task itself could not complete (its worker kept dying, or it was cancelled).
        attempt_marker(spec).unlink(missing_ok=True)
        errored.add(spec.key)
        if errored.intersection(spec.upstream):
            return StepResult(spec.key, StepStatus.UPSTREAM_FAILED, reason="upstream errored")
        return StepResult(spec.key, StepStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    return result


@dataclass(frozen=True, slots=True)
class _Watch:
    """Limits on a Dask run: per-script timeout and an external cancel switch."""

    script_timeout: float | None = None
    cancel: threading.Event | None = None


def _gather(
    client: Any,
    futures: dict[StepKey, Any],
    specs: dict[StepKey, StepSpec],
    commit: Callable[[StepResult], StepResult],
    progress: Progress,
    watch: _Watch,
) -> dict[StepKey, StepResult]:
    from distributed import wait
    from distributed.client import FuturesCancelledError

    waiting: Any = wait
    spec_of = {future.key: specs[key] for key, future in futures.items()}
    pending = set(futures.values())
    results: dict[StepKey, StepResult] = {}
    errored: set[StepKey] = set()

    def finish(spec: StepSpec, result: StepResult) -> None:
        results[spec.key] = commit(result)
        progress(len(results), len(futures))

    def abandon(future: Any, error: str) -> None:
        # A thread cannot be killed: a running script goes on, but its result is ignored.
        spec = spec_of[future.key]
        client.cancel([future])
        pending.discard(future)
        errored.add(spec.key)
        attempt_marker(spec).unlink(missing_ok=True)
        _log.error("Step run failed %s: %s", spec.key, error)
        finish(spec, StepResult(spec.key, StepStatus.FAILED, error=error))

    while pending:
        # A cancelled future (after a timeout) makes wait() raise; it counts as done below.
        with contextlib.suppress(TimeoutError, FuturesCancelledError):
            waiting(list(pending), timeout=_WATCH_INTERVAL, return_when="FIRST_COMPLETED")
        for future in [f for f in pending if f.done()]:
            pending.discard(future)
            spec = spec_of[future.key]
            finish(spec, _future_result(future, spec, errored))
        if watch.cancel is not None and watch.cancel.is_set():
            for future in list(pending):
                abandon(future, "cancelled")
        elif watch.script_timeout is not None:
            now = time.time()
            for future in list(pending):
                started = _started_at(spec_of[future.key])
                if started is not None and now - started > watch.script_timeout:
                    abandon(future, f"timed out after {watch.script_timeout:g} s")
    return results


def _run_dask(
    specs: Sequence[StepSpec],
    commit: Callable[[StepResult], StepResult],
    progress: Progress,
    settings: DaskSettings,
    client: Any | None,
    watch: _Watch,
) -> list[StepResult]:
    with ExitStack() as stack:
        if client is None:
            client = open_client(settings, stack)
        futures: dict[StepKey, Any] = {}
        for spec in specs:
            futures[spec.key] = client.submit(
                execute_step,
                spec,
                *(futures[key] for key in spec.upstream),
                key=f"sinagot-{spec.run_id}-{spec.key}",
                pure=False,
                retries=_DASK_RETRIES,
            )
        results = _gather(
            client, futures, {spec.key: spec for spec in specs}, commit, progress, watch
        )
    order = {spec.key: index for index, spec in enumerate(specs)}
    return sorted(results.values(), key=lambda result: order[result.key])


def _noop_progress(done: int, total: int) -> None:
    del done, total


def run_scope(
    settings: Settings,
    store: Store,
    rows: Iterable[DataRow],
    scope: Scope,
    *,
    force: bool = False,
    mode: str | None = None,
    progress: Progress | None = None,
    client: Any | None = None,
    defer_publication: bool = False,
    script_timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Run every step of ``scope`` over ``rows`` and return the report.

    ``client``: an existing ``distributed.Client`` to run on (implies Dask mode;
    the caller owns it). ``defer_publication``: leave finished steps pending
    for :func:`publish_pending` instead of storing them now, and take earlier
    pending results as stored. On Dask, a script running longer than
    ``script_timeout`` seconds, or every unfinished step once ``cancel`` is
    set, fails without waiting for it (a thread cannot be stopped: it runs on,
    its result is ignored).
    """
    begin = time.perf_counter()
    mode = "dask" if client is not None else mode or settings.run_mode
    rows_by_id = {row.id: row for row in rows}
    planner = _Planner(settings, store, force, use_pending=defer_publication)
    specs: list[StepSpec] = []
    with ChecksumCache(store.local_root) as cache:
        for record in scope.records:
            specs.extend(planner.specs(rows_by_id[record], scope, cache))
        if cache.hashed:
            _log.info("hashed %d changed input files", cache.hashed)
    pipeline = settings.store.pipeline

    def commit(result: StepResult) -> StepResult:
        return _commit(store, rows_by_id, pipeline, result, defer=defer_publication)

    report_progress = progress or _noop_progress
    if mode == "dask" and specs:
        watch = _Watch(script_timeout, cancel)
        results = _run_dask(specs, commit, report_progress, settings.dask, client, watch)
    else:
        results = _run_serial(specs, commit, report_progress)
    return RunReport(tuple(results), seconds=time.perf_counter() - begin, mode=mode)
