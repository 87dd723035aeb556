"""One attempt at a job: count it, let the backend fetch, run and upload, record how it ended.

While an attempt runs, the log records of its task (and of every task it spawns,
the backend's included) also go to the job's log tail: the journal keeps the
tail when the attempt ends, ``sinagot jobs ID`` shows it live before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from ..errors import SinagotError
from ._backend import ProcessResult
from ._datasets import ServedDataset
from ._journal import Journal
from ._one_line import one_line
from ._states import IN_FLIGHT, JobState

if TYPE_CHECKING:
    from ..config import DaemonSettings

__all__ = ["JobLog", "JobLogHandler", "Outcome", "attempt"]

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 50
# How long a failed attempt waits for the server to say whether its session is still there.
STILL_LISTED_TIMEOUT = 30.0


@dataclass(slots=True)
class JobLog:
    job_id: int
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Collect the log records of this task, and of the tasks it spawns, meanwhile."""
        token = _current_job.set(self)
        try:
            yield
        finally:
            _current_job.reset(token)


# A context variable, so that the tasks a job spawns (inheriting the context) log to it too.
_current_job: contextvars.ContextVar[JobLog | None] = contextvars.ContextVar(
    "sinagot_current_job", default=None
)


class JobLogHandler(logging.Handler):
    """Appends each record to the log tail of the job being attempted, if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        job_log = _current_job.get()
        if job_log is not None:
            job_log.lines.append(self.format(record).replace("\n", " | "))


class Outcome(StrEnum):
    """How an attempt ended (the ``outcome`` of ``sinagot_job_attempts_total``)."""

    DONE = "done"
    # Done, but the session changed on the server (or the pipeline) meanwhile: the job runs
    # again.
    CHANGED = "changed"
    # Failed; the job waits for another attempt.
    RETRY = "retry"
    FAILED = "failed"
    # Failed because the session left the server meanwhile: the job is dropped.
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    outcome: Outcome
    # (status, seconds) of the scripts the attempt ran (ProcessResult.steps).
    steps: tuple[tuple[str, float], ...] = ()
    # Why the job failed, when it did (outcome FAILED).
    error: str | None = None


async def attempt(
    journal: Journal,
    dataset: ServedDataset,
    job_id: int,
    job_log: JobLog,
    *,
    settings: Callable[[], DaemonSettings],
    stopping: Callable[[], bool],
    server_wait: Callable[[], float | None],
) -> AttemptEnd:
    """Run one attempt at a job, journalling each step; errors end up in the journal.

    ``server_wait``: while the dataset's server is slowed (see ServerPace), how long a job
    waits before it tries again; None when the server is well. An attempt that fails
    meanwhile does not count: a struggling server is answered with fewer tries per
    request, and those failures must not use up the job's attempts.

    Cancelled (a stop, or a job past its shutdown timeout), it keeps its in-flight
    state for the next start; a stop on purpose gives the attempt back.
    """
    job = await journal.begin(job_id, settings().max_attempts)
    where = job.title
    if job.state == JobState.FAILED:
        logger.error("%s: %s", where, job.last_error)
        return AttemptEnd(Outcome.FAILED, error=job.last_error)
    resumed = job.state in IN_FLIGHT
    logger.info("%s: %s attempt %d", where, "resuming" if resumed else "starting", job.attempts)

    async def enter_phase(phase: JobState) -> None:
        await journal.enter(job_id, phase)
        logger.info("%s: %s", where, phase)

    timeout = settings().job_timeout
    error: str | None = None
    result: ProcessResult | None = None
    try:
        async with asyncio.timeout(timeout):
            result = await dataset.backend.process_session(job.session, enter_phase)
    except TimeoutError:
        error = f"timed out after {timeout:g} s ([daemon] job_timeout)"
    except asyncio.CancelledError:
        if stopping():
            # Interrupted on purpose: it resumes at the next start without losing a try.
            await journal.give_back_attempt(job_id, "interrupted by a daemon stop")
        raise
    except SinagotError as exc:
        error = one_line(exc)
    except Exception as exc:
        logger.debug("%s: unexpected error", where, exc_info=True)
        error = one_line(exc)
    if result is not None and not result.ok:
        error = result.errors[0] if result.errors else f"{result.failed} script(s) failed"
        error = f"{error} ({result.summary()})"
    if error is None and result is not None:
        logger.info("%s: done, %s", where, result.summary())
        state = await journal.finish(
            job_id,
            job.last_modified,
            result.summary(),
            tuple(job_log.lines),
            result.settled_last_modified,
            result.fingerprints,
        )
        outcome = Outcome.DONE if state == JobState.DONE else Outcome.CHANGED
        return AttemptEnd(outcome, result.steps)
    steps = () if result is None else result.steps
    if not await _still_listed(dataset, job.session, where):
        logger.info(
            "%s: the session is no longer on the server: its job is dropped (%s)", where, error
        )
        await journal.drop(job_id)
        return AttemptEnd(Outcome.GONE, steps)
    wait = server_wait()
    if wait is None:
        logger.warning("%s: attempt %d failed: %s", where, job.attempts, error)
    else:
        logger.warning(
            "%s: attempt %d failed while its server is slowed (it does not count): %s",
            where,
            job.attempts,
            error,
        )
    failed = await journal.fail(
        job_id,
        error or "no result",
        max_attempts=settings().max_attempts,
        retry_backoff=settings().retry_backoff,
        log_tail=tuple(job_log.lines),
        fingerprints=None if result is None else result.fingerprints,
        server_wait=wait,
    )
    if failed.state != JobState.FAILED:
        return AttemptEnd(Outcome.RETRY, steps)
    logger.error(
        "%s: failed after %d attempt(s); fix it, then run `sinagot retry %d`",
        where,
        failed.attempts,
        job_id,
    )
    return AttemptEnd(Outcome.FAILED, steps, failed.last_error)


async def _still_listed(dataset: ServedDataset, label: str, where: str) -> bool:
    """Whether the server still lists the session; True when it cannot tell (the attempt
    then fails as any other, and the next one asks again)."""
    try:
        async with asyncio.timeout(STILL_LISTED_TIMEOUT):
            return await dataset.backend.still_listed(label)
    except Exception as exc:
        logger.debug("%s: could not ask whether the session is still listed: %s", where, exc)
        return True
