"""What a dataset's current pipeline means for the sessions the daemon has processed.

Each job keeps the step fingerprints its last run planned with (see
``sinagot.engine.Fingerprints``); the journal keeps each dataset's current ones. A
session whose steps' fingerprints differ from the current ones (a script, its
parameters or patterns, the config's lists, an upstream step) is *stale*: it is
processed again, only for what changed, after the sessions that are new or changed on
the server. A :class:`PipelineReport` sums up what that takes, for ``sinagot status``
and ``sinagot plan``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["PipelineReport"]


def _frozen(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(counts.items())))


@dataclass(frozen=True, slots=True)
class PipelineReport:
    """For one dataset: the sessions to process again and, by step, how many run it again
    (``steps``); steps gone from the pipeline, by the number of sessions that keep their
    derivatives (``removed``); steps whose script cannot be loaded now (``broken``); of the
    sessions, those a change made stale just now (``newly_stale``)."""

    sessions: int = 0
    steps: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    removed: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    broken: tuple[str, ...] = ()
    newly_stale: int = 0

    @classmethod
    def of(
        cls,
        stale: Iterable[tuple[Iterable[str], int]],
        removed: Iterable[tuple[Iterable[str], int]],
        broken: Iterable[str] = (),
        newly_stale: int = 0,
    ) -> PipelineReport:
        """Sum up groups of sessions: (their stale steps, count), (their removed steps, count)."""
        sessions = 0
        steps: dict[str, int] = {}
        for units, count in stale:
            sessions += count
            for unit in units:
                steps[unit] = steps.get(unit, 0) + count
        gone: dict[str, int] = {}
        for units, count in removed:
            for unit in units:
                gone[unit] = gone.get(unit, 0) + count
        return cls(sessions, _frozen(steps), _frozen(gone), tuple(sorted(broken)), newly_stale)

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "steps": dict(self.steps),
            "removed": dict(self.removed),
            "broken": list(self.broken),
        }
