"""Runners: where the steps of a run execute, serially here or on a Dask cluster.

A runner takes the specs in dependency order and a ``commit`` callback (called
in this process as each step finishes, see ``_publish``), and returns one result
per spec in their order. On Dask, a script running longer than the watch's
``script_timeout``, or every unfinished step once its ``cancel`` event is set,
fails without waiting for it (a thread cannot be stopped: it runs on, its
result is ignored).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from .._report import StepKey, StepResult, StepStatus
from ..config import DaskSettings
from ._dask import open_client
from ._steps import StepSpec, attempt_marker, execute_step

__all__ = ["Commit", "DaskRunner", "Progress", "Runner", "SerialRunner", "Watch"]

_log = logging.getLogger("sinagot.run")

Progress = Callable[[int, int], None]
Commit = Callable[[StepResult], StepResult]

# Dask re-runs a task that raised this many times; a dying worker is handled by
# the scheduler's own allowed-failures count.
_DASK_RETRIES = 2
# How often a Dask run checks for timed-out scripts and cancellation.
_WATCH_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class Watch:
    """Limits on a run: a per-script timeout (Dask only) and a cancel switch set by its owner."""

    script_timeout: float | None = None
    cancel: threading.Event | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


class Runner(Protocol):
    """Executes specs (in dependency order) and commits each result as it finishes."""

    mode: str

    def run(
        self, specs: Sequence[StepSpec], commit: Commit, progress: Progress, watch: Watch
    ) -> list[StepResult]: ...


class SerialRunner:
    """Each step in turn, in this thread."""

    mode = "main_process"

    def run(
        self, specs: Sequence[StepSpec], commit: Commit, progress: Progress, watch: Watch
    ) -> list[StepResult]:
        results: dict[StepKey, StepResult] = {}
        for done, spec in enumerate(specs, start=1):
            if watch.cancelled:
                result = StepResult(spec.key, StepStatus.FAILED, error="cancelled")
            else:
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


def _gather(
    client: Any,
    futures: dict[StepKey, Any],
    specs: dict[StepKey, StepSpec],
    commit: Commit,
    progress: Progress,
    watch: Watch,
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
        if watch.cancelled:
            for future in list(pending):
                abandon(future, "cancelled")
        elif watch.script_timeout is not None:
            now = time.time()
            for future in list(pending):
                started = _started_at(spec_of[future.key])
                if started is not None and now - started > watch.script_timeout:
                    abandon(future, f"timed out after {watch.script_timeout:g} s")
    return results


class DaskRunner:
    """The steps as tasks of a Dask cluster: ``client``'s (its owner closes it), or one
    that ``settings`` describe, for the run only."""

    mode = "dask"

    def __init__(self, settings: DaskSettings, client: Any | None = None) -> None:
        self._settings = settings
        self._client = client

    def run(
        self, specs: Sequence[StepSpec], commit: Commit, progress: Progress, watch: Watch
    ) -> list[StepResult]:
        if not specs:
            return []
        with ExitStack() as stack:
            client = self._client
            if client is None:
                client = open_client(self._settings, stack)
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
