"""The engine: plan the steps of a scope, run them serially or on Dask, commit results.

Planning and committing happen in the calling process, which alone talks to
the store; :func:`sinagot._steps.execute_step` decides and runs each step
wherever the runner puts it.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._checksums import ChecksumCache
from ._report import RunReport, StepKey, StepResult, StepStatus
from ._steps import StepSpec, attempt_marker, execute_step, list_files, remove_dead_staging
from .config import DaskSettings, Settings
from .connectors import DERIVATIVES_DIR, DataRow, FileSet, Store, derivative_path
from .errors import ScriptError, SinagotError, StoreError
from .scripts import LoadedScript, format_paths, load_script

__all__ = ["Progress", "Scope", "run_scope"]

_log = logging.getLogger("sinagot.run")

Progress = Callable[[int, int], None]

# Dask re-runs a task that raised this many times; a dying worker is handled by
# the scheduler's own allowed-failures count.
_DASK_RETRIES = 2


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


def _link_or_copy(source: Path, destination: Path) -> None:
    if destination.exists() and os.path.samefile(source, destination):
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, temporary)
        except OSError:
            # Another file system, or links not allowed: copy instead.
            shutil.copy2(source, temporary)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _materialize(fileset: FileSet, destination: Path) -> None:
    """Make the files of ``fileset`` visible under ``destination`` (no-op if already there)."""
    # Cheap path comparison first: this runs for every input of every step.
    if fileset.root == destination or (
        destination.is_dir() and os.path.samefile(fileset.root, destination)
    ):
        return
    for name in fileset.names:
        _link_or_copy(fileset.root / name, destination / name)


class _Planner:
    """Builds the StepSpecs of one run; only this object talks to the store before running."""

    def __init__(self, settings: Settings, store: Store, force: bool) -> None:
        self.settings = settings
        self.store = store
        self.root = store.local_root
        self.force = force
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
        entry = row.entry(derivative_path(key.name, self.settings.store.pipeline))
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


def _commit(
    store: Store, rows: dict[str, DataRow], pipeline: str, result: StepResult
) -> StepResult:
    """Store a step's outputs then, last, its provenance (which marks them complete)."""
    if result.status is not StepStatus.RAN or result.provenance is None:
        return result
    row = rows[result.key.record]
    path = derivative_path(result.key.name, pipeline)
    try:
        entry = row.entry(path) or store.create_fileset_entry(path, row)
        root = store.local_root / row.id / DERIVATIVES_DIR
        store.put_fileset(FileSet(root=root, names=tuple(sorted(result.outputs))), entry)
        store.put_fileset_provenance(result.provenance, entry)
    except (SinagotError, OSError) as exc:
        error = f"storing outputs failed: {exc}"
        _log.error("Step %s: %s", result.key, error)
        return replace(result, status=StepStatus.FAILED, error=error)
    return result


def _run_serial(
    specs: Sequence[StepSpec], commit: Callable[[StepResult], StepResult], progress: Progress
) -> list[StepResult]:
    results: dict[StepKey, StepResult] = {}
    for done, spec in enumerate(specs, start=1):
        result = execute_step(spec, *(results[key] for key in spec.upstream))
        results[spec.key] = commit(result)
        progress(done, len(specs))
    return list(results.values())


def _cluster_options(settings: DaskSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"dashboard_address": None}
    for name in ("n_workers", "threads_per_worker", "processes"):
        value = getattr(settings, name)
        if value is not None:
            options[name] = value
    return options


def _run_dask(
    specs: Sequence[StepSpec],
    commit: Callable[[StepResult], StepResult],
    progress: Progress,
    settings: DaskSettings,
) -> list[StepResult]:
    # distributed is untyped: keep its objects as Any.
    from distributed import Client, LocalCluster, as_completed

    client_type: Any = Client
    cluster_type: Any = LocalCluster
    completed: Any = as_completed

    with ExitStack() as stack:
        if settings.address is not None:
            client = stack.enter_context(client_type(settings.address))
        else:
            cluster = stack.enter_context(cluster_type(**_cluster_options(settings)))
            client = stack.enter_context(client_type(cluster))
        futures: dict[StepKey, Any] = {}
        spec_of: dict[str, StepSpec] = {}
        for spec in specs:
            future = client.submit(
                execute_step,
                spec,
                *(futures[key] for key in spec.upstream),
                key=f"sinagot-{spec.run_id}-{spec.key}",
                pure=False,
                retries=_DASK_RETRIES,
            )
            futures[spec.key] = future
            spec_of[future.key] = spec
        results: dict[StepKey, StepResult] = {}
        errored: set[StepKey] = set()
        for done, future in enumerate(completed(list(futures.values())), start=1):
            spec = spec_of[future.key]
            try:
                result = future.result()
            except Exception as exc:
                # The task itself could not complete (e.g. its worker kept dying).
                attempt_marker(spec).unlink(missing_ok=True)
                errored.add(spec.key)
                if errored.intersection(spec.upstream):
                    result = StepResult(
                        spec.key, StepStatus.UPSTREAM_FAILED, reason="upstream errored"
                    )
                else:
                    result = StepResult(
                        spec.key, StepStatus.FAILED, error=f"{type(exc).__name__}: {exc}"
                    )
            results[spec.key] = commit(result)
            progress(done, len(specs))
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
) -> RunReport:
    """Run every step of ``scope`` over ``rows`` and return the report."""
    begin = time.perf_counter()
    mode = mode or settings.run_mode
    rows_by_id = {row.id: row for row in rows}
    planner = _Planner(settings, store, force)
    specs: list[StepSpec] = []
    with ChecksumCache(store.local_root) as cache:
        for record in scope.records:
            specs.extend(planner.specs(rows_by_id[record], scope, cache))
        if cache.hashed:
            _log.info("hashed %d changed input files", cache.hashed)
    pipeline = settings.store.pipeline

    def commit(result: StepResult) -> StepResult:
        return _commit(store, rows_by_id, pipeline, result)

    report_progress = progress or _noop_progress
    if mode == "dask" and specs:
        results = _run_dask(specs, commit, report_progress, settings.dask)
    else:
        results = _run_serial(specs, commit, report_progress)
    return RunReport(tuple(results), seconds=time.perf_counter() - begin, mode=mode)
