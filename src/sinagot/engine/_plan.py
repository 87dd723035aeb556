"""Planning a run: which steps a scope holds, in which order, and what each needs.

A record's steps come from the config (task -> modalities -> scripts) and the
scripts' PATH_IN / PATH_OUT: a step whose input is another step's output runs
after it. :class:`StepGraph` knows that structure without touching any store;
:func:`step_spec` turns one planned step, with what the fetch phase brought
(see ``_fetch``), into the picklable :class:`~sinagot.engine._steps.StepSpec` a runner
executes.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._layout import derivatives_dir, list_files
from .._report import StepKey
from ..config import Settings
from ..errors import ScriptError
from ._checksums import ChecksumCache
from ._scripts import LoadedScript, format_paths, load_script, spec_parts
from ._steps import StepSpec
from ._worktree import WorkTree

__all__ = [
    "FetchedRecord",
    "PlannedStep",
    "RecordPlan",
    "Scope",
    "ScriptLoader",
    "StepGraph",
    "step_spec",
]

_log = logging.getLogger("sinagot.run")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which steps to run: optional filters on record, task, modality and script.

    With ``script`` (Sinagot 0.1's ``run(step_label)``) only the steps of that script
    run: the steps they read from are checked, never run.
    """

    records: tuple[str, ...]
    task: str | None = None
    modality: str | None = None
    script: str | None = None


@dataclass(slots=True)
class PlannedStep:
    """One step of a record: its script, the local paths it reads and writes, its upstream."""

    key: StepKey
    script: LoadedScript | None = None
    error: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    upstream: list[StepKey] = field(default_factory=list)
    # A problem of its script, said once in the log when a run plans the step.
    log_once: str | None = None

    def produced_inputs(self, by_key: dict[StepKey, PlannedStep]) -> dict[str, StepKey]:
        """Its input paths that upstream steps write -> the step writing each."""
        return {
            path: producer
            for producer in self.upstream
            for path in self.inputs
            if path in by_key[producer].outputs
        }


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """The steps of one record a scope selects, in dependency order."""

    record: str
    steps: tuple[PlannedStep, ...]
    # Steps whose outputs a selected step reads: their outputs must be in the work tree.
    has_dependents: frozenset[StepKey]
    # Upstream steps of a script-filtered scope: checked, never run, not reported.
    pinned: frozenset[StepKey] = frozenset()

    @property
    def by_key(self) -> dict[StepKey, PlannedStep]:
        return {step.key: step for step in self.steps}


def _overlaps(path: str, other: str) -> bool:
    return path == other or path.startswith(f"{other}/") or other.startswith(f"{path}/")


# Loads the script of (modality, name): the script, or the error that makes it unusable.
ScriptLoader = Callable[[str, str], LoadedScript | ScriptError]


class StepGraph:
    """The steps of any record of ``settings``: scripts loaded once, errors logged once.

    ``freeform``: the dataset is in Sinagot 0.1's layout (see ``_worktree``), where a
    script may keep 0.1's template ``run()``. ``scripts`` loads a script (default: from
    its file).
    """

    def __init__(
        self, settings: Settings, *, freeform: bool = False, scripts: ScriptLoader | None = None
    ) -> None:
        self.settings = settings
        self.freeform = freeform
        self._load = scripts or self._load_file
        self._scripts: dict[tuple[str, str], LoadedScript | ScriptError] = {}
        self._said: set[str] = set()

    def _say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            _log.error("%s", message)

    def _load_logged(self, modality: str, name: str) -> LoadedScript | ScriptError:
        try:
            return load_script(self.settings.script_file(modality, name), modality, name)
        except ScriptError as exc:
            _log.error("%s", exc)
            return exc

    def _load_file(self, modality: str, name: str) -> LoadedScript | ScriptError:
        try:
            return load_script(self.settings.script_file(modality, name), modality, name)
        except ScriptError as exc:
            # Logged when a step of it is planned: a run of one scope says nothing of the
            # scripts of others.
            return exc

    def _script(self, modality: str, name: str) -> LoadedScript | ScriptError:
        cache_key = (modality, name)
        if cache_key not in self._scripts:
            self._scripts[cache_key] = self._load(modality, name)
        return self._scripts[cache_key]

    def record_steps(self, record: str) -> list[PlannedStep]:
        """Every step of ``record`` in dependency order (config order breaks ties)."""
        planned: list[PlannedStep] = []
        for task in self.settings.tasks.values():
            for modality in task.modalities:
                for name in self.settings.modalities[modality].scripts_for(task.name):
                    step = PlannedStep(StepKey(record, task.name, modality, name))
                    loaded = self._script(modality, name)
                    if isinstance(loaded, ScriptError):
                        step.error = step.log_once = str(loaded)
                    else:
                        step.script = loaded
                        step.inputs = format_paths(loaded.path_in, record, task.name)
                        step.outputs = format_paths(loaded.path_out, record, task.name)
                        if not (loaded.implements_run or self.freeform):
                            step.error = step.log_once = (
                                f"{loaded.file}: Script does not implement run(): add it"
                            )
                    planned.append(step)
        producers: dict[str, PlannedStep] = {}
        for step in planned:
            for output in step.outputs:
                other = producers.setdefault(output, step)
                if other is not step and step.error is None:
                    step.error = f"{step.key.unit} writes {output}, already written by {other.key.unit}: rename one output"
        self._protect_acquired(planned)
        for step in planned:
            for path in step.inputs:
                producer = producers.get(path)
                if (
                    producer is not None
                    and producer is not step
                    and producer.key not in step.upstream
                ):
                    step.upstream.append(producer.key)
        return _toposort(planned)

    def _protect_acquired(self, planned: list[PlannedStep]) -> None:
        """Fail the steps whose outputs would write over (or into) acquired data: one of
        their own inputs that no other step writes (a script editing its input in place)."""
        for step in planned:
            if step.error is not None:
                continue
            others = [o for other in planned if other is not step for o in other.outputs]
            for output in step.outputs:
                clash = next(
                    (
                        path
                        for path in step.inputs
                        if _overlaps(output, path) and not any(_overlaps(o, path) for o in others)
                    ),
                    None,
                )
                if clash is not None:
                    step.error = (
                        f"PATH_OUT {output} of {step.key.unit} would write over its input"
                        f" {clash}, acquired data that no other step writes: Sinagot never"
                        " writes over acquired data; change PATH_OUT"
                    )
                    assert step.script is not None  # steps with outputs have a script
                    written = spec_parts(step.script.path_out)[step.outputs.index(output)]
                    read = spec_parts(step.script.path_in)[step.inputs.index(clash)]
                    step.log_once = (
                        f"{step.script.file}: PATH_OUT {'/'.join(written)} would write over"
                        f" its PATH_IN {'/'.join(read)}, acquired data that no other step"
                        " writes: Sinagot never writes over acquired data; change PATH_OUT"
                    )
                    break

    def plan(self, record: str, scope: Scope) -> RecordPlan:
        """The steps of ``record`` in ``scope``, with the upstream steps they need."""
        steps = self.record_steps(record)
        wanted = {
            step.key
            for step in steps
            if scope.task in (None, step.key.task)
            and scope.modality in (None, step.key.modality)
            and scope.script in (None, step.key.script)
        }
        named = frozenset(wanted)
        by_key = {step.key: step for step in steps}
        # Upstream steps outside the scope still run (or are checked) first.
        pending = list(wanted)
        while pending:
            for upstream in by_key[pending.pop()].upstream:
                if upstream not in wanted:
                    wanted.add(upstream)
                    pending.append(upstream)
        selected = tuple(step for step in steps if step.key in wanted)
        for step in selected:
            if step.log_once is not None:
                self._say_once(step.log_once)
        has_dependents = frozenset(key for step in selected for key in step.upstream)
        pinned = frozenset(wanted - named) if scope.script is not None else frozenset()
        return RecordPlan(record, selected, has_dependents, pinned)


def _toposort(steps: list[PlannedStep]) -> list[PlannedStep]:
    order = {step.key: index for index, step in enumerate(steps)}
    waiting = {step.key: len(step.upstream) for step in steps}
    dependents: dict[StepKey, list[StepKey]] = {step.key: [] for step in steps}
    for step in steps:
        for upstream in step.upstream:
            dependents[upstream].append(step.key)
    ready = [order[key] for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    result: list[PlannedStep] = []
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


def _local_checksums(
    root: Path, cache: ChecksumCache, local_path: str, known: dict[str, str]
) -> dict[str, str]:
    """MD5 of every file at or below ``local_path``: the server's when it gave them."""
    target = root / local_path
    if not target.exists():
        return {}
    result: dict[str, str] = {}
    for relative in list_files(target):
        name = f"{local_path}/{relative}" if relative else local_path
        result[name] = known.get(name) or cache.md5(root / name)
    return result


@dataclass(slots=True)
class FetchedRecord:
    """What the fetch phase brought for one record (see ``_fetch``)."""

    # Acquired-data entry ("task/modality") -> the server's digests of its files by local
    # path ({} when it gives none), or None when the record has no such data.
    primary: dict[str, dict[str, str] | None] = field(default_factory=dict)
    # Why an entry could not be fetched, by entry path.
    entry_errors: dict[str, str] = field(default_factory=dict)
    provenance: dict[StepKey, dict[str, Any] | None] = field(default_factory=dict)
    stale: dict[StepKey, str] = field(default_factory=dict)
    step_errors: dict[StepKey, str] = field(default_factory=dict)


def step_spec(
    plan: RecordPlan,
    step: PlannedStep,
    fetched: FetchedRecord,
    *,
    tree: WorkTree,
    store_root: Path,
    run_id: str,
    force: bool,
    settings: Settings,
    cache: ChecksumCache,
) -> StepSpec:
    """The spec a runner executes for ``step``: checksums of its inputs, its stored provenance."""
    root = tree.root
    base = StepSpec(
        key=step.key,
        local_root=root,
        book_dir=derivatives_dir(store_root, plan.record),
        output_prefix=tree.output_prefix(plan.record),
        status_log=tree.status_log(store_root, plan.record),
        freeform=tree.freeform,
        pinned=step.key in plan.pinned,
        run_id=run_id,
        script_file=settings.script_file(step.key.modality, step.key.script),
        upstream=tuple(step.upstream),
        force=force and step.key not in plan.pinned,
    )
    if step.error is not None or step.script is None:
        return replace(base, error=step.error or "script not loaded")
    produced = step.produced_inputs(plan.by_key)
    static: dict[str, str] = {}
    missing: str | None = None
    try:
        for path in step.inputs:
            if path in produced:
                continue
            known: dict[str, str] = {}
            entry_path = tree.primary_entry(step.key, path)
            if entry_path is not None:
                if entry_path in fetched.entry_errors:
                    raise _Unprepared(fetched.entry_errors[entry_path])
                listed = fetched.primary.get(entry_path)
                if listed is None:
                    missing = f"no {entry_path} data for {plan.record}"
                    break
                known = listed
            found = _local_checksums(root, cache, path, known)
            if not found:
                missing = f"{path} does not exist"
                break
            static.update(found)
        if step.key in fetched.step_errors:
            raise _Unprepared(fetched.step_errors[step.key])
    except (_Unprepared, OSError) as exc:
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
        stale=fetched.stale.get(step.key),
        stored_provenance=fetched.provenance.get(step.key),
    )


class _Unprepared(Exception):
    """The fetch phase could not prepare an input of the step (its message says why)."""
