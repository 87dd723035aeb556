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

# The states a job may move to, by the state it is in. A move from a state to itself
# notes something in the job's history without moving it (an attempt counted or given
# back, a resume, a new stamp while the job waits or runs). A waiting job (discovered,
# stale) may
# - enter any phase: a backend may skip the phases it has no use for;
# - end done, failed or stale before any phase (an error or a timeout before the first,
#   a backend with nothing to do, too many attempts, the pipeline changed meanwhile);
# - wait as discovered: its session changed on the server, or a retry was asked.
# A job in flight may enter any phase (one resumed after a restart starts over from its
# first phase, whatever phase it died in), end done, failed or stale (the pipeline
# changed while it ran), or wait again: a failed attempt backs off for the next one
# (stale again if it was), and a session that changed while its job ran is processed
# again. A finished job only waits again: when its session changes on the server or
# someone retries it (discovered), or when the pipeline that produced it changes
# (stale); it is never noted, so no attempt and no phase starts on it.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        JobState.DISCOVERED: frozenset(
            {
                JobState.DISCOVERED,
                JobState.STALE,
                JobState.FETCHING,
                JobState.RUNNING,
                JobState.UPLOADING,
                JobState.DONE,
                JobState.FAILED,
            }
        ),
        JobState.STALE: frozenset(
            {
                JobState.DISCOVERED,
                JobState.STALE,
                JobState.FETCHING,
                JobState.RUNNING,
                JobState.UPLOADING,
                JobState.DONE,
                JobState.FAILED,
            }
        ),
        JobState.FETCHING: frozenset(
            {
                JobState.DISCOVERED,
                JobState.STALE,
                JobState.FETCHING,
                JobState.RUNNING,
                JobState.UPLOADING,
                JobState.DONE,
                JobState.FAILED,
            }
        ),
        JobState.RUNNING: frozenset(
            {
                JobState.DISCOVERED,
                JobState.STALE,
                JobState.FETCHING,
                JobState.RUNNING,
                JobState.UPLOADING,
                JobState.DONE,
                JobState.FAILED,
            }
        ),
        JobState.UPLOADING: frozenset(
            {
                JobState.DISCOVERED,
                JobState.STALE,
                JobState.FETCHING,
                JobState.RUNNING,
                JobState.UPLOADING,
                JobState.DONE,
                JobState.FAILED,
            }
        ),
        JobState.DONE: frozenset({JobState.DISCOVERED, JobState.STALE}),
        JobState.FAILED: frozenset({JobState.DISCOVERED, JobState.STALE}),
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
