"""Step fingerprints: what makes each step of a dataset's pipeline what it is, hashed.

A step's fingerprint covers its task, modality and script name, its script's
source hash and ``PARAMETERS``, its ``PATH_IN`` and ``PATH_OUT`` patterns, the
derivative pipeline name, the Sinagot version, and the fingerprints of the steps
whose outputs it reads. Not its place in its modality's script list: steps run in
the order their paths impose, so another order (a script removed before it) changes
what it computes only through the steps it reads from, which the fingerprint holds. None of it depends on the record, so one map
(step -> fingerprint) says which pipeline produced a record's derivatives: the
ledger keeps it per record, the daemon keeps the map each job ran with and
compares it with the current one (a step whose fingerprint moved makes the
sessions it produced stale).

:class:`FingerprintProbe` computes the current map cheaply and often: every script
file is stat'ed, and only one whose size, mtime or inode moved is read, hashed and
imported again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._version import __version__
from ..config import Settings
from ..errors import ScriptError
from ._plan import PlannedStep, StepGraph
from ._scripts import LoadedScript, load_script

__all__ = [
    "FingerprintProbe",
    "Fingerprints",
    "PipelineChange",
    "StepMark",
    "fingerprints_of",
    "pipeline_fingerprints",
]

_log = logging.getLogger("sinagot.run")

# The record the record-independent step structure is planned for: each pattern keeps its
# ``{id}``, so steps relate as they do for every record.
_ANY_RECORD = "{id}"


def _digest(document: Any) -> str:
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class StepMark:
    """A step's fingerprint (``full``), and the part that is the step's own: its script,
    parameters, patterns and place (``own``; the rest is its upstream steps')."""

    full: str
    own: str


@dataclass(frozen=True, slots=True)
class PipelineChange:
    """How a stored map of fingerprints differs from the current one, by step unit."""

    changed: tuple[str, ...] = ()
    # Changed only because a step they read from changed.
    upstream_changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def stale_steps(self) -> tuple[str, ...]:
        """The steps to run again, sorted."""
        return tuple(sorted({*self.changed, *self.upstream_changed, *self.added}))


@dataclass(frozen=True, slots=True)
class Fingerprints:
    """The fingerprint of each step of a pipeline, by unit (``task/modality/script``).

    ``broken``: steps whose script cannot be loaded now (or reads from one that cannot):
    they have no fingerprint, and a comparison says nothing about them.
    """

    steps: Mapping[str, StepMark] = field(default_factory=lambda: MappingProxyType({}))
    broken: frozenset[str] = frozenset()

    def to_json(self) -> str:
        """The map as the journal stores it: the same text for the same pipeline."""
        return json.dumps(
            {unit: [mark.full, mark.own] for unit, mark in self.steps.items()},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Fingerprints:
        """A map written by :meth:`to_json`; ValueError if ``text`` is not one."""
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError("a fingerprint map is a JSON object")
        steps: dict[str, StepMark] = {}
        for unit, value in document.items():
            if not (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f"the fingerprint of {unit!r} is not [full, own]")
            steps[unit] = StepMark(value[0], value[1])
        return cls(MappingProxyType(steps))

    def plain(self) -> dict[str, str]:
        """Step unit -> fingerprint."""
        return {unit: mark.full for unit, mark in self.steps.items()}

    def compare(self, stored: Fingerprints) -> PipelineChange:
        """What changed from ``stored`` (what produced some derivatives) to this pipeline."""
        changed: list[str] = []
        upstream: list[str] = []
        added: list[str] = []
        for unit, mark in sorted(self.steps.items()):
            before = stored.steps.get(unit)
            if before is None:
                added.append(unit)
            elif before.full != mark.full:
                (changed if before.own != mark.own else upstream).append(unit)
        removed = sorted(
            unit for unit in stored.steps if unit not in self.steps and unit not in self.broken
        )
        return PipelineChange(tuple(changed), tuple(upstream), tuple(added), tuple(removed))


def _spec(value: Any) -> Any:
    # PATH_IN / PATH_OUT as JSON: a list of parts, or an object of such lists.
    return {k: list(v) for k, v in value.items()} if isinstance(value, Mapping) else list(value)


def fingerprints_of(steps: Sequence[PlannedStep], settings: Settings) -> Fingerprints:
    """The fingerprints of ``steps`` (in dependency order, as a plan lists them)."""
    marks: dict[str, StepMark] = {}
    broken: set[str] = set()
    # A broken script's outputs are unknown, so is which steps read them: no step of its
    # task has a fingerprint until it is fixed.
    broken_tasks = {s.key.task for s in steps if s.script is None or s.error is not None}
    for step in steps:
        key = step.key
        unit = key.unit
        upstream = [producer.unit for producer in step.upstream]
        if key.task in broken_tasks or any(u not in marks for u in upstream):
            broken.add(unit)
            continue
        assert step.script is not None  # a task with a step without a script is broken
        own = _digest(
            [
                unit,
                step.script.source_md5,
                dict(step.script.parameters),
                _spec(step.script.path_in),
                _spec(step.script.path_out),
                settings.store.pipeline,
                __version__,
            ]
        )
        full = _digest([own, sorted(marks[u].full for u in upstream)])
        marks[unit] = StepMark(full, own)
    return Fingerprints(MappingProxyType(marks), frozenset(broken))


def pipeline_fingerprints(graph: StepGraph) -> Fingerprints:
    """The fingerprints of every step of the pipeline of ``graph`` (the same for any record)."""
    return fingerprints_of(graph.record_steps(_ANY_RECORD), graph.settings)


class FingerprintProbe:
    """The current fingerprints of the pipeline of ``settings``, recomputed from what moved.

    Call :meth:`current` from one thread at a time: it stats every script file and reads,
    hashes and imports again only those whose size, mtime or inode changed. A script that
    cannot be loaded is logged once per version of its file. ``freeform``: the dataset is in
    Sinagot 0.1's layout (see ``StepGraph``).
    """

    def __init__(self, settings: Settings, *, freeform: bool = False) -> None:
        self.settings = settings
        self.freeform = freeform
        self._loaded: dict[Path, tuple[tuple[int, int, int], LoadedScript | ScriptError]] = {}

    def _load(self, modality: str, name: str) -> LoadedScript | ScriptError:
        file = self.settings.script_file(modality, name)
        try:
            info = os.stat(file)
        except OSError:
            # load_script names the problem; a missing file is checked again next time.
            stamp = (-1, -1, -1)
        else:
            stamp = (info.st_size, info.st_mtime_ns, info.st_ino)
        known = self._loaded.get(file)
        if known is not None and known[0] == stamp:
            return known[1]
        loaded: LoadedScript | ScriptError
        try:
            loaded = load_script(file, modality, name)
        except ScriptError as exc:
            _log.error("%s", exc)
            loaded = exc
        self._loaded[file] = (stamp, loaded)
        return loaded

    def current(self) -> Fingerprints:
        graph = StepGraph(self.settings, freeform=self.freeform, scripts=self._load)
        return pipeline_fingerprints(graph)
