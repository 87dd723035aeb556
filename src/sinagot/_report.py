"""What a run did: one result per step, and a report that sums them up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["RunReport", "StepKey", "StepResult", "StepStatus"]

# Records named in a grouped error line; ``to_dict()`` lists every step.
_RECORDS_SHOWN = 10


class StepStatus(StrEnum):
    RAN = "ran"
    UP_TO_DATE = "up to date"
    MISSING_INPUT = "missing input"
    FAILED = "failed"
    UPSTREAM_FAILED = "skipped: upstream failed"


@dataclass(frozen=True, slots=True, order=True)
class StepKey:
    """One step: a script of a modality, run for one task of one record."""

    record: str
    task: str
    modality: str
    script: str

    @property
    def name(self) -> str:
        """The derivative name of the step's outputs (before ``@pipeline``)."""
        return f"{self.task}_{self.modality}_{self.script}"

    @property
    def unit(self) -> str:
        return f"{self.task}/{self.modality}/{self.script}"

    def __str__(self) -> str:
        return f"{self.record}/{self.unit}"


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one step. ``outputs`` maps names under ``<id>/derivatives/`` to MD5s."""

    key: StepKey
    status: StepStatus
    error: str | None = None
    reason: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.key.record,
            "task": self.key.task,
            "modality": self.key.modality,
            "script": self.key.script,
            "status": str(self.status),
            "error": self.error,
            "reason": self.reason,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class RunReport:
    """The results of one ``run()``, in execution order."""

    results: tuple[StepResult, ...]
    seconds: float = 0.0
    mode: str = "main_process"

    def _count(self, status: StepStatus) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def ran(self) -> int:
        return self._count(StepStatus.RAN)

    @property
    def skipped(self) -> int:
        """Steps that were already up to date."""
        return self._count(StepStatus.UP_TO_DATE)

    @property
    def missing_input(self) -> int:
        return self._count(StepStatus.MISSING_INPUT)

    @property
    def failed(self) -> int:
        return self._count(StepStatus.FAILED)

    @property
    def upstream_failed(self) -> int:
        return self._count(StepStatus.UPSTREAM_FAILED)

    @property
    def retried(self) -> int:
        """Extra attempts made after a worker died or a task errored (Dask)."""
        return sum(max(r.attempts - 1, 0) for r in self.results)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.upstream_failed == 0

    @property
    def errors(self) -> dict[str, str]:
        """Step (``record/task/modality/script``) -> error message, for failed steps."""
        return {str(r.key): r.error for r in self.results if r.error is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "seconds": round(self.seconds, 3),
            "ran": self.ran,
            "up_to_date": self.skipped,
            "missing_input": self.missing_input,
            "failed": self.failed,
            "upstream_failed": self.upstream_failed,
            "retried": self.retried,
            "steps": [r.to_dict() for r in self.results],
        }

    def __str__(self) -> str:
        columns = (
            StepStatus.RAN,
            StepStatus.UP_TO_DATE,
            StepStatus.MISSING_INPUT,
            StepStatus.FAILED,
            StepStatus.UPSTREAM_FAILED,
        )
        headers = ("ran", "up to date", "missing input", "failed", "upstream failed")
        per_unit: dict[str, Counter[StepStatus]] = {}
        for result in self.results:
            per_unit.setdefault(result.key.unit, Counter())[result.status] += 1
        width = max([len("script"), *(len(unit) for unit in per_unit)])
        lines = ["script".ljust(width) + "".join(f"  {h:>{len(h)}}" for h in headers)]
        for unit, counts in per_unit.items():
            cells = "".join(
                f"  {counts[s]:>{len(h)}}" for s, h in zip(columns, headers, strict=True)
            )
            lines.append(unit.ljust(width) + cells)
        summary = (
            f"{len(self.results)} steps in {self.seconds:.1f} s ({self.mode}): "
            f"{self.ran} ran, {self.skipped} up to date, {self.missing_input} missing input, "
            f"{self.failed} failed, {self.upstream_failed} skipped after a failure"
        )
        if self.retried:
            summary += f", {self.retried} retried after a worker died or errored"
        lines.append(summary)
        if self.results and self.ran == 0 and self.ok and self.missing_input == 0:
            lines.append("Everything is up to date: nothing to do.")
        lines.extend(self._error_lines())
        return "\n".join(lines)

    def _error_lines(self) -> list[str]:
        """One line per distinct error: a script that cannot load, or input missing everywhere,
        fails many steps the same way, and one line with their count says it best."""
        groups: dict[str, list[StepKey]] = {}
        for result in self.results:
            if result.error is not None:
                groups.setdefault(result.error, []).append(result.key)
        lines = []
        for error, keys in groups.items():
            if len(keys) == 1:
                lines.append(f"error: {keys[0]}: {error}")
                continue
            units = ", ".join(dict.fromkeys(key.unit for key in keys))
            records = list(dict.fromkeys(key.record for key in keys))
            shown = ", ".join(records[:_RECORDS_SHOWN])
            if len(records) > _RECORDS_SHOWN:
                shown += f" and {len(records) - _RECORDS_SHOWN} more"
            lines.append(
                f"error: {len(keys)} steps ({units}) of {len(records)} record(s) [{shown}]: {error}"
            )
        return lines
