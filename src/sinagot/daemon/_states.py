"""The daemon's states, each with the changes it allows: jobs, the daemon itself, datasets.

A job's state lives in the journal and changes only along :data:`TRANSITIONS`;
the journal checks every write against it, so a bug that would, say, start a
phase of a finished job stops with :class:`~sinagot.errors.InvalidTransitionError`
instead of silently corrupting the journal. The daemon's own status changes
only along :data:`STATUS_TRANSITIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from ..errors import InvalidTransitionError

__all__ = [
    "ALLOWED_TRANSITIONS",
    "FINISHED",
    "INITIAL",
    "IN_FLIGHT",
    "PHASES",
    "RUNNABLE",
    "STATUS_TRANSITIONS",
    "TRANSITIONS",
    "DaemonStatus",
    "DatasetHealth",
    "JobState",
    "check_phase",
    "check_status_transition",
    "check_transition",
    "shown_status",
]

S = TypeVar("S", bound=StrEnum)


class JobState(StrEnum):
    """Where a job (one session of one dataset) stands, as the journal records it."""

    DISCOVERED = "discovered"
    # Done or failed under a pipeline that has changed since: waits to be processed again,
    # after the sessions that are new or changed on the server.
    STALE = "stale"
    FETCHING = "fetching"
    RUNNING = "running"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"


# The phases of an attempt, in the order a backend announces them.
PHASES = (JobState.FETCHING, JobState.RUNNING, JobState.UPLOADING)
IN_FLIGHT = frozenset(PHASES)
# What the dispatcher claims: waiting jobs, jobs a stopped daemon left in flight, and (when
# nothing else waits) stale jobs.
RUNNABLE = frozenset({JobState.DISCOVERED, JobState.STALE, *IN_FLIGHT})
FINISHED = frozenset({JobState.DONE, JobState.FAILED})
# The state of a job the journal creates for a new session.
INITIAL = JobState.DISCOVERED

# Every change of state a job may make, and what makes it. A move from a state to itself
# notes something in the job's history without moving it. The waiting and in-flight
# rows are full on purpose: a backend may skip the phases it has no use for, and a job
# resumed after a restart starts over from its first phase whatever phase it died in.
# A finished job only waits again; it is never noted, so no attempt starts on it.
# tests/test_daemon_states.py makes each pair below through the journal, and walks
# every other pair to see it refused.
ALLOWED_TRANSITIONS: tuple[tuple[JobState, JobState], ...] = (
    # waiting, discovered: noted (an attempt counted, a new stamp), a phase entered
    # (the first a backend has), ended before any phase (an error or a timeout, nothing
    # to do, too many attempts, a pipeline changed meanwhile)
    (JobState.DISCOVERED, JobState.DISCOVERED),
    (JobState.DISCOVERED, JobState.FETCHING),
    (JobState.DISCOVERED, JobState.RUNNING),
    (JobState.DISCOVERED, JobState.UPLOADING),
    (JobState.DISCOVERED, JobState.DONE),
    (JobState.DISCOVERED, JobState.FAILED),
    (JobState.DISCOVERED, JobState.STALE),
    # waiting, stale: the same, and discovered when its session changes or on a retry
    (JobState.STALE, JobState.STALE),
    (JobState.STALE, JobState.FETCHING),
    (JobState.STALE, JobState.RUNNING),
    (JobState.STALE, JobState.UPLOADING),
    (JobState.STALE, JobState.DONE),
    (JobState.STALE, JobState.FAILED),
    (JobState.STALE, JobState.DISCOVERED),
    # in flight: noted (a resume, an attempt given back), the next phase (or the first,
    # resumed), ended, or waiting again (a failed attempt backs off as discovered, or as
    # stale if it was; a session changed while its job ran is processed again)
    (JobState.FETCHING, JobState.FETCHING),
    (JobState.FETCHING, JobState.RUNNING),
    (JobState.FETCHING, JobState.UPLOADING),
    (JobState.FETCHING, JobState.DONE),
    (JobState.FETCHING, JobState.FAILED),
    (JobState.FETCHING, JobState.DISCOVERED),
    (JobState.FETCHING, JobState.STALE),
    (JobState.RUNNING, JobState.RUNNING),
    (JobState.RUNNING, JobState.UPLOADING),
    (JobState.RUNNING, JobState.FETCHING),
    (JobState.RUNNING, JobState.DONE),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.DISCOVERED),
    (JobState.RUNNING, JobState.STALE),
    (JobState.UPLOADING, JobState.UPLOADING),
    (JobState.UPLOADING, JobState.FETCHING),
    (JobState.UPLOADING, JobState.RUNNING),
    (JobState.UPLOADING, JobState.DONE),
    (JobState.UPLOADING, JobState.FAILED),
    (JobState.UPLOADING, JobState.DISCOVERED),
    (JobState.UPLOADING, JobState.STALE),
    # finished: waits again when its session changes or someone retries it
    # (discovered), or when the pipeline that produced it changes (stale)
    (JobState.DONE, JobState.DISCOVERED),
    (JobState.DONE, JobState.STALE),
    (JobState.FAILED, JobState.DISCOVERED),
    (JobState.FAILED, JobState.STALE),
)
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        state: frozenset(new for old, new in ALLOWED_TRANSITIONS if old is state)
        for state in JobState
    }
)


class DaemonStatus(StrEnum):
    """The daemon's lifecycle (``status`` in the control API)."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


# A pause that comes while the daemon is starting or reloading holds the jobs at once;
# the daemon shows it as paused when that ends. Every way out, a failed start or a
# crash included, goes through stopping to stopped.
STATUS_TRANSITIONS: Mapping[DaemonStatus, frozenset[DaemonStatus]] = MappingProxyType(
    {
        DaemonStatus.STARTING: frozenset(
            {DaemonStatus.RUNNING, DaemonStatus.PAUSED, DaemonStatus.STOPPING}
        ),
        DaemonStatus.RUNNING: frozenset(
            {DaemonStatus.PAUSED, DaemonStatus.RELOADING, DaemonStatus.STOPPING}
        ),
        DaemonStatus.PAUSED: frozenset(
            {DaemonStatus.RUNNING, DaemonStatus.RELOADING, DaemonStatus.STOPPING}
        ),
        DaemonStatus.RELOADING: frozenset(
            {DaemonStatus.RUNNING, DaemonStatus.PAUSED, DaemonStatus.STOPPING}
        ),
        DaemonStatus.STOPPING: frozenset({DaemonStatus.STOPPED}),
        DaemonStatus.STOPPED: frozenset(),
    }
)


class DatasetHealth(StrEnum):
    """Whether a dataset's server answered its last listing."""

    UNKNOWN = "unknown"
    OK = "ok"
    DOWN = "down"


def _check(subject: str, old: S, new: S, table: Mapping[S, frozenset[S]]) -> None:
    allowed = table[old]
    if new in allowed:
        return
    then = f"it may only become {', '.join(sorted(allowed))}" if allowed else "it stays so"
    raise InvalidTransitionError(
        f"{subject} cannot go from {old} to {new}: once {old}, {then} (a bug: please report it)"
    )


def check_transition(job: str, old: JobState, new: JobState) -> None:
    """Refuse a change of ``job`` (as named in messages) that :data:`TRANSITIONS` does not allow."""
    _check(job, old, new, TRANSITIONS)


def check_phase(job: str, state: JobState) -> None:
    """Refuse a backend's announcement of a state that is not a phase."""
    if state not in IN_FLIGHT:
        raise InvalidTransitionError(
            f"{job}: the backend announced '{state}', which is not a phase; a backend announces"
            f" {', '.join(PHASES)} (a bug in the backend)"
        )


def check_status_transition(old: DaemonStatus, new: DaemonStatus) -> None:
    """Refuse a change of the daemon's status that :data:`STATUS_TRANSITIONS` does not allow."""
    _check("the daemon", old, new, STATUS_TRANSITIONS)


def shown_status(paused: bool, stopping: bool) -> DaemonStatus:
    """The one word that status lines show: a pause shows even while stopping or reloading."""
    if paused:
        return DaemonStatus.PAUSED
    return DaemonStatus.STOPPING if stopping else DaemonStatus.RUNNING
