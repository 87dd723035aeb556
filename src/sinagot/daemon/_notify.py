"""Telling operators: jobs that failed, datasets unhealthy and recovered, sessions made stale
by a change of the pipeline, start and stop.

The daemon reports events with plain calls that never wait (:meth:`Notifications.job_failed`,
:meth:`~Notifications.started`, :meth:`~Notifications.wake` after a listing). One task
that the daemon's TaskGroup owns (:meth:`Notifications.run`) turns them into messages
and hands them to a :class:`Sender`; the Apprise one sends from a thread of its own,
so a mail server that hangs holds that thread, never the daemon's loop.

- **Grouped:** the jobs that fail within ``[notify] group_window`` seconds of the first
  go in one message, with their ids and the first line of each error.
- **Unhealthy:** a dataset whose listings have failed for ``unhealthy_after`` seconds is
  announced once; its recovery too.
- **Rate-limited:** at most ``max_per_hour`` messages in any hour. What comes meanwhile
  waits, and goes as one message when the limit allows (the last message, at stop,
  goes in any case).
- **Failures:** a message that cannot be delivered is logged once; the next delivered
  after failures says so in the log. Nothing is retried: the next message carries on.

To notify a new kind of event, add it to :class:`Event`, write its message (as
:meth:`Notifications._unhealthy_message` does) and put it in the outbox.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from .._version import __version__
from ..errors import NotificationError
from ._datasets import ServedDataset
from ._states import DatasetHealth

if TYPE_CHECKING:
    import apprise

    from ..config import NotifySettings

__all__ = ["AppriseSender", "Event", "Message", "Notifications", "Sender"]

logger = logging.getLogger(__name__)

# A send that takes longer is given up (Apprise's own timeouts usually end it first).
SEND_TIMEOUT = 60.0
# What the stop waits, at most, for its last message.
FINAL_TIMEOUT = 15.0
# Jobs named in one failure message; the others are counted.
MAX_JOBS_LISTED = 20
# Messages waiting for the rate limit; older ones are dropped (and counted) past it.
MAX_WAITING = 50
RATE_PERIOD = 3600.0
_ERROR_CHARS = 300


class Event(StrEnum):
    """What a message is about (its kind of news)."""

    JOBS_FAILED = "jobs_failed"
    UNHEALTHY = "unhealthy"
    RECOVERED = "recovered"
    STALE = "stale"
    STARTED = "started"
    STOPPED = "stopped"


# Apprise's notify types (the colour or icon of a message where the service shows one).
_TYPES = {
    Event.JOBS_FAILED: "failure",
    Event.UNHEALTHY: "warning",
    Event.RECOVERED: "success",
    Event.STALE: "info",
    Event.STARTED: "info",
    Event.STOPPED: "info",
}


@dataclass(frozen=True, slots=True)
class Message:
    event: Event
    title: str
    body: str

    @property
    def notify_type(self) -> str:
        return _TYPES[self.event]


@dataclass(frozen=True, slots=True)
class FailedJob:
    id: int
    dataset: str
    session: str
    error: str


class Sender(Protocol):
    """Delivers one message to every configured URL; raises NotificationError if it cannot."""

    async def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


class AppriseSender:
    """Sends through Apprise on a thread of its own (its plugins block on the network)."""

    def __init__(self, urls: Sequence[str], timeout: float = SEND_TIMEOUT) -> None:
        self.urls = tuple(urls)
        self._timeout = timeout
        self._apprise: apprise.Apprise | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sinagot-notify")

    def _send(self, message: Message) -> None:
        from .._apprise import capture, load

        with capture() as captured:
            if self._apprise is None:
                self._apprise = load(self.urls)  # imports Apprise's plugins: not on the loop
            # Plain text: mail gets a text/plain body, and nothing is read as markup.
            delivered = self._apprise.notify(
                body=message.body,
                title=message.title,
                notify_type=message.notify_type,
                body_format="text",
            )
        if not delivered:
            raise NotificationError(captured.reason("Apprise reported a failure"))

    async def send(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, self._send, message)
        try:
            async with asyncio.timeout(self._timeout):
                await loop.run_in_executor(self._thread, call)
        except TimeoutError:
            raise NotificationError(f"no answer within {self._timeout:g} s") from None

    def close(self) -> None:
        # A send still hanging ends with Apprise's own timeouts; the daemon does not wait.
        self._thread.shutdown(wait=False, cancel_futures=True)


class RateLimit:
    """At most ``limit`` sends in any ``period`` seconds."""

    def __init__(self, limit: int, period: float = RATE_PERIOD) -> None:
        self.limit = limit
        self.period = period
        self._sent: deque[float] = deque()

    def _forget(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.period:
            self._sent.popleft()

    def allows(self, now: float) -> bool:
        self._forget(now)
        return len(self._sent) < self.limit

    def next_allowed(self, now: float) -> float:
        self._forget(now)
        if len(self._sent) < self.limit:
            return now
        return self._sent[len(self._sent) - self.limit] + self.period

    def record(self, now: float) -> None:
        self._sent.append(now)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _first_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "no error message")
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


def _combined(messages: Sequence[Message], dropped: int, prefix: str) -> Message:
    """The messages that waited for the rate limit, as one."""
    if len(messages) == 1 and not dropped:
        return messages[0]
    parts = [f"{m.title}\n\n{m.body}" for m in messages]
    if dropped:
        parts.append(
            f"{dropped} older notification(s) were dropped: more waited than one message holds."
        )
    intro = (
        f"{len(messages)} notifications held back by the rate limit ([notify] max_per_hour):"
        if len(messages) > 1
        else "Held back by the rate limit ([notify] max_per_hour):"
    )
    event = next((m.event for m in messages if m.event is Event.JOBS_FAILED), messages[-1].event)
    return Message(
        event, f"{prefix} {len(messages)} notification(s)", "\n\n---\n\n".join([intro, *parts])
    )


class Notifications:
    """The daemon's notifications; :meth:`run` in its TaskGroup, :meth:`aclose` at the end.

    ``settings`` gives the ``[notify]`` settings in force (a reload may change them),
    ``datasets`` the datasets served now, ``page_url`` the status page (None: not served).
    ``sender_for`` builds the sender of a set of URLs (default: :class:`AppriseSender`).
    """

    def __init__(
        self,
        settings: Callable[[], NotifySettings],
        datasets: Callable[[], Mapping[str, ServedDataset]],
        *,
        page_url: Callable[[], str | None] = lambda: None,
        sender_for: Callable[[Sequence[str]], Sender] = AppriseSender,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._datasets = datasets
        self._page_url = page_url
        self._sender_for = sender_for
        self._clock = clock
        self._sender: Sender | None = None
        self._sender_urls: tuple[str, ...] = ()
        self._prefix = f"[sinagot@{socket.gethostname()}]"
        self._failed_jobs: list[FailedJob] = []
        self._more_failed = 0
        self._first_failure: float | None = None
        self._outbox: list[Message] = []
        self._dropped = 0
        self._unhealthy: dict[str, float] = {}  # announced: dataset -> unhealthy since
        self._limit: RateLimit | None = None
        self._wake = asyncio.Event()
        self._failing = False
        self._holding = False
        self._closed = False
        self._started_at = self._clock()
        # For the metrics: messages delivered and not.
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self._settings().urls) and not self._closed

    # -- events (from the daemon's loop; they never wait) -------------------------------

    def wake(self) -> None:
        """Something changed (a listing ended): look at the datasets' health again."""
        self._wake.set()

    def job_failed(self, job_id: int, dataset: str, session: str, error: str | None) -> None:
        """A job failed after its last attempt."""
        if not self.enabled:
            return
        if len(self._failed_jobs) < MAX_JOBS_LISTED:
            self._failed_jobs.append(
                FailedJob(job_id, dataset, session, _first_line(error or "no error message"))
            )
        else:
            self._more_failed += 1
        if self._first_failure is None:
            self._first_failure = self._clock()
        self._wake.set()

    def stale(self, dataset: str, sessions: int, steps: Mapping[str, int]) -> None:
        """A change of the dataset's pipeline made ``sessions`` sessions stale, for ``steps``."""
        if not self.enabled or not sessions:
            return
        lines = [
            f"The pipeline of {dataset} changed: {sessions} session(s) will be processed again,"
            " after new sessions, for the steps that changed:",
            *(f"  {unit}: {count} session(s)" for unit, count in steps.items()),
            "",
            "What would run: sinagot plan; progress: sinagot jobs --state stale.",
        ]
        self._post(
            Message(Event.STALE, f"{self._prefix} {dataset}: {sessions} stale", "\n".join(lines))
        )

    def started(self) -> None:
        if not self.enabled:
            return
        names = sorted(self._datasets())
        page = self._page_url()
        lines = [
            f"Sinagot {__version__} started (pid {os.getpid()}), following {len(names)} dataset(s):"
            f" {', '.join(names)}."
        ]
        if page:
            lines.append(f"Status page: {page}")
        self._post(Message(Event.STARTED, f"{self._prefix} started", "\n".join(lines)))

    # -- the task ------------------------------------------------------------------------

    async def run(self) -> None:
        """Send what comes, until cancelled (the daemon cancels it at stop, then aclose)."""
        while True:
            self._wake.clear()
            now = self._clock()
            self._look_at_health(now)
            self._close_failure_group(now, force=False)
            if self._outbox and self._rate_limit().allows(now):
                self._holding = False
                await self._deliver(now)
                continue
            if self._outbox and not self._holding:
                self._holding = True
                logger.info(
                    "notifications held back by the rate limit ([notify] max_per_hour = %d)"
                    " until %s",
                    self._rate_limit().limit,
                    time.strftime("%H:%M:%S", time.localtime(self._rate_limit().next_allowed(now))),
                )
            delay = self._next_wakeup(now)
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def aclose(self, why: str) -> None:
        """Send what waits and the stop message (past the rate limit), then stop for good."""
        if self._closed:
            return
        try:
            if self._settings().urls:
                now = self._clock()
                self._close_failure_group(now, force=True)
                uptime = _duration(now - self._started_at)
                self._post(
                    Message(
                        Event.STOPPED,
                        f"{self._prefix} stopped",
                        f"Sinagot {__version__} (pid {os.getpid()}) stopped after {uptime}: {why}.",
                    )
                )
                try:
                    async with asyncio.timeout(FINAL_TIMEOUT):
                        await self._deliver(now)
                except TimeoutError:
                    self._delivery_failed(
                        f"{self._prefix} stopped", f"no answer within {FINAL_TIMEOUT:g} s"
                    )
        finally:
            self._closed = True
            if self._sender is not None:
                self._sender.close()

    # -- inside --------------------------------------------------------------------------

    def _rate_limit(self) -> RateLimit:
        if self._limit is None:
            self._limit = RateLimit(self._settings().max_per_hour)
        # A reload may change it; what was sent in the last hour still counts.
        self._limit.limit = self._settings().max_per_hour
        return self._limit

    def _post(self, message: Message) -> None:
        self._outbox.append(message)
        if len(self._outbox) > MAX_WAITING:
            del self._outbox[0]
            self._dropped += 1
        self._wake.set()

    def _next_wakeup(self, now: float) -> float | None:
        settings = self._settings()
        times = []
        if self._first_failure is not None:
            times.append(self._first_failure + settings.group_window)
        if self._outbox:
            times.append(self._rate_limit().next_allowed(now))
        for dataset in self._datasets().values():
            if dataset.down_since is not None and dataset.name not in self._unhealthy:
                times.append(dataset.down_since + settings.unhealthy_after)
        return max(0.0, min(times) - now) if times else None

    def _close_failure_group(self, now: float, *, force: bool) -> None:
        first = self._first_failure
        if first is None:
            return
        if not force and now < first + self._settings().group_window:
            return
        jobs, more = self._failed_jobs, self._more_failed
        self._failed_jobs, self._more_failed, self._first_failure = [], 0, None
        if jobs:
            self._post(self._failure_message(jobs, more))

    def _failure_message(self, jobs: Sequence[FailedJob], more: int) -> Message:
        count = len(jobs) + more
        if count == 1:
            job = jobs[0]
            title = f"{self._prefix} job {job.id} failed: {job.dataset}/{job.session}"
        else:
            title = f"{self._prefix} {count} jobs failed"
        lines = [f"{count} job(s) failed after their last attempt:", ""]
        lines += [f"job {j.id}, {j.dataset}/{j.session}: {j.error}" for j in jobs]
        if more:
            lines.append(f"... and {more} more (sinagot jobs --state failed)")
        first = jobs[0].id
        lines += ["", f"Details: sinagot jobs {first}; once fixed: sinagot retry {first}."]
        page = self._page_url()
        if page:
            lines.append(f"Status page: {page}#/jobs?state=failed")
        return Message(Event.JOBS_FAILED, title, "\n".join(lines))

    def _look_at_health(self, now: float) -> None:
        settings = self._settings()
        datasets = self._datasets()
        for name in [n for n in self._unhealthy if n not in datasets]:
            del self._unhealthy[name]  # no longer served (a reload)
        for dataset in datasets.values():
            since = self._unhealthy.get(dataset.name)
            if since is not None and dataset.health is DatasetHealth.OK:
                del self._unhealthy[dataset.name]
                if self.enabled:
                    self._post(self._recovered_message(dataset, now - since))
            elif (
                since is None
                and dataset.down_since is not None
                and now - dataset.down_since >= settings.unhealthy_after
            ):
                self._unhealthy[dataset.name] = dataset.down_since
                if self.enabled:
                    self._post(self._unhealthy_message(dataset, now))

    def _where(self, dataset: ServedDataset) -> str:
        store = dataset.settings.store
        if store.server:
            return f"{dataset.name} ({store.server}, project {store.project})"
        return dataset.name

    def _unhealthy_message(self, dataset: ServedDataset, now: float) -> Message:
        assert dataset.down_since is not None
        body = (
            f"{self._where(dataset)} has not answered for"
            f" {_duration(now - dataset.down_since)} ({dataset.failures} listing(s) failed in a"
            f" row; [notify] unhealthy_after = {self._settings().unhealthy_after:g} s).\n"
            f"Last error: {_first_line(dataset.last_error or 'none recorded')}\n"
            "No new session of it is processed until it answers again."
        )
        return Message(Event.UNHEALTHY, f"{self._prefix} {dataset.name} unhealthy", body)

    def _recovered_message(self, dataset: ServedDataset, down_for: float) -> Message:
        body = f"{self._where(dataset)} answers again, after {_duration(down_for)} unhealthy."
        return Message(Event.RECOVERED, f"{self._prefix} {dataset.name} recovered", body)

    def _current_sender(self) -> Sender:
        urls = self._settings().urls
        if self._sender is None or self._sender_urls != urls:
            if self._sender is not None:
                self._sender.close()
            self._sender, self._sender_urls = self._sender_for(urls), urls
        return self._sender

    def _delivery_failed(self, title: str, reason: str) -> None:
        self.failed += 1
        if not self._failing:
            self._failing = True
            logger.warning(
                "notification %r could not be delivered: %s (further failures are not logged"
                " until one is delivered)",
                title,
                reason,
            )

    async def _deliver(self, now: float) -> None:
        """Send everything waiting as one message; log a failure once until a success."""
        if not self._outbox or not self._settings().urls:
            self._outbox.clear()
            return
        message = _combined(self._outbox, self._dropped, self._prefix)
        self._outbox, self._dropped = [], 0
        self._rate_limit().record(now)
        try:
            await self._current_sender().send(message)
        except NotificationError as exc:
            self._delivery_failed(message.title, str(exc))
            return
        except Exception as exc:
            # A bug in a notification plugin must not take the daemon down.
            self._delivery_failed(message.title, f"{type(exc).__name__}: {exc}")
            return
        self.sent += 1
        if self._failing:
            self._failing = False
            logger.info("notifications are delivered again")
        logger.debug("notification sent: %s", message.title)
