"""What the daemon needs from a dataset: a listing of sessions and a way to process one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._states import JobState

if TYPE_CHECKING:
    from ..config import Settings
    from ..connectors import ServerPaces
    from ..engine import Fingerprints

__all__ = [
    "BackendFactory",
    "DatasetBackend",
    "ListedSession",
    "PacedBackend",
    "ProcessResult",
    "SessionInfo",
]


class ListedSession(Protocol):
    """One session of a listing, as the daemon reads it (a :class:`SessionInfo`, or the
    store's own record: a listing of a large project is not copied)."""

    @property
    def label(self) -> str: ...

    @property
    def last_modified(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of a listing: its label and the server's last-modified stamp."""

    label: str
    last_modified: str


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What processing one session did; any failed script makes the job fail.

    ``settled_last_modified``: the session's stamp on the server after the job's
    own uploads, when the backend proved the inputs it processed still unchanged
    then. The job is done for that stamp, so the next poll does not take the
    job's own uploads for a change. None when it could not prove it: the job
    is done for the stamp it started for, as listed.

    ``steps``: (status, seconds) of each script that ran, passed or failed (the
    daemon's step duration histogram).

    ``fingerprints``: the pipeline the job planned with (None: it did not get that far):
    the journal keeps it, to tell when a change of the pipeline makes the session stale.
    """

    ran: int = 0
    skipped: int = 0
    failed: int = 0
    uploaded: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)
    settled_last_modified: str | None = None
    steps: tuple[tuple[str, float], ...] = ()
    fingerprints: Fingerprints | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.errors

    def summary(self) -> str:
        return (
            f"ran {self.ran}, skipped {self.skipped}, failed {self.failed}, "
            f"uploaded {self.uploaded}"
        )


class DatasetBackend(Protocol):
    """A dataset as the daemon sees it (implemented on top of the connectors)."""

    @property
    def name(self) -> str:
        """Dataset name shown in status, unique among the daemon's datasets."""
        ...

    async def list_sessions(self) -> Sequence[ListedSession]:
        """List every session of the project with ONE request; raise StoreError on failure.

        A backend may answer with the very same sequence as last time when the listing
        did not change: the daemon then skips comparing it (so never modify one).
        """
        ...

    async def process_session(
        self, label: str, enter_phase: Callable[[JobState], Awaitable[None]]
    ) -> ProcessResult:
        """Fetch, run and upload one session, journalling each phase with ``enter_phase``.

        The phases are the in-flight job states, ``JobState.FETCHING``, ``RUNNING`` and
        ``UPLOADING``; ``enter_phase`` refuses any other state. ``RUNNING`` is awaited
        before any script runs (a script may kill the daemon: the journal must show
        it); another phase may be journalled while it is under way, but every call is
        awaited before this returns.
        """
        ...

    async def pipeline(self, settings: Settings | None = None) -> Fingerprints:
        """The fingerprints of the dataset's pipeline as its scripts are now on disk, for its
        config (or ``settings``: the config read again, for ``sinagot plan``).

        Called often (each ``pipeline_check_interval``): no server request, and only the
        script files that moved are read again.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the daemon no longer uses the backend."""
        ...


@runtime_checkable
class PacedBackend(Protocol):
    """A backend whose requests follow the pace of their server (see
    :class:`sinagot.connectors.ServerPace`): the daemon hands it the paces it owns, one per
    server, before its first request."""

    def pace_with(self, paces: ServerPaces) -> None: ...


BackendFactory = Callable[["Settings"], DatasetBackend]
