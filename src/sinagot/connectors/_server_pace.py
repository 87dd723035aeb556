"""Back-pressure: how hard Sinagot may press one server now, from how the server answers.

An XNAT is shared by a whole institute; one that struggles must get fewer requests
from us, not the retries of every request that failed. Each server has one
:class:`ServerPace`, shared by every store and poll that talks to it (the daemon
owns them, in :class:`ServerPaces`). Its **level** (0: normal) rises by one on
trouble, at most once per :data:`BUMP_GAP` seconds (a burst of failed requests in
flight together is one sign, not many):

- an answer 429, 502, 503 or 504 (a ``Retry-After`` also holds every new request to
  that server until it has passed, capped at :data:`MAX_HOLD` seconds);
- no answer: a timeout, a refused or reset connection;
- a latency well above the server's own recent median for that kind of request:
  over :data:`LATENCY_FACTOR` times it and :data:`LATENCY_MARGIN` seconds more
  (judged once :data:`MIN_SAMPLES` answers give a median).

Each level doubles the poll interval, halves the requests allowed in flight (no
limit but the connection pools at level 0) and takes one try off each request's
retries. The level falls back one step at a time once the server is seen healthy
again: one step per ``recovery / MAX_LEVEL`` seconds from its first good answer after
the last trouble, so that the worst level is back to normal ``recovery`` seconds
after the server answered well again (additive decrease after a multiplicative
slow-down, as TCP's AIMD). Time alone is no sign of health: a server polled less
often than a recovery step would otherwise be back to full pace before each of the
failing polls, and never slowed.

Written here rather than taken from a library: what a pace must slow (polls,
transfers, retries of one server, across many clients) is Sinagot's own, and the
rules are a few lines of arithmetic on a clock that tests can set.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = ["PaceView", "ServerPace", "ServerPaces"]

MAX_LEVEL = 4
BUMP_GAP = 1.0
MAX_HOLD = 120.0
LATENCY_FACTOR = 4.0
LATENCY_MARGIN = 1.0
MIN_SAMPLES = 10
_SAMPLES = 50
# Answers that say the server (or the proxy before it) is overloaded.
TROUBLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class PaceView:
    """A server's pace at one moment, as status and metrics show it."""

    server: str
    level: int
    # Multiplies the poll interval of the server's datasets.
    poll_factor: float
    # Requests allowed in flight at once (None: only the connection pools bound them).
    transfers: int | None
    # Tries of one request (the first one and its retries), out of the configured ones.
    retry_attempts: int
    # Why the pace is what it is: "normal", or the last trouble, in words...
    reason: str
    # Seconds left of a hold asked for by the server's Retry-After.
    hold: float
    # Troubles seen since the daemon started, by kind.
    troubles: dict[str, int]
    # ...and as the kind of that trouble ("status_503", "latency", "timeout",
    # "no_answer"; "normal"): a metric label of a few values, where the words vary.
    cause: str = "normal"

    def to_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "level": self.level,
            "poll_factor": self.poll_factor,
            "transfers": self.transfers,
            "retry_attempts": self.retry_attempts,
            "reason": self.reason,
            "cause": self.cause,
            "hold": round(self.hold, 3),
            "troubles": dict(self.troubles),
        }


class ServerPace:
    """The pace of one server (see the module docstring); used from one event loop.

    ``recovery``: seconds from the last trouble to the normal pace, from the worst
    level. ``transfers``: requests in flight at level 1 is half of it. ``attempts``:
    the configured tries of one request. ``clock``: monotonic seconds (tests set it).
    """

    def __init__(
        self,
        server: str,
        *,
        recovery: float = 40.0,
        transfers: int = 8,
        attempts: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.recovery = recovery
        self.transfers = transfers
        self.attempts = attempts
        self._clock = clock
        self._level = 0
        # When recovery started or last fell a step (None: no good answer since the last
        # trouble, no recovery yet).
        self._since: float | None = None
        self._last_bump = float("-inf")
        self._hold_until = float("-inf")
        self._reason = "normal"
        self._cause = "normal"
        self._troubles: collections.Counter[str] = collections.Counter()
        self._latencies: dict[str, collections.deque[float]] = {}
        self._busy = 0
        self._waiters: list[asyncio.Future[None]] = []

    # -- what the pace allows ------------------------------------------------------------

    @property
    def level(self) -> int:
        self._settle(self._clock())
        return self._level

    def poll_factor(self) -> float:
        return float(2**self.level)

    def transfer_limit(self) -> int | None:
        level = self.level
        return None if level == 0 else max(1, self.transfers >> level)

    def retry_attempts(self, attempts: int | None = None) -> int:
        """Tries allowed for one request, of ``attempts`` (default: the configured ones)."""
        return max(1, (self.attempts if attempts is None else attempts) - self.level)

    def hold_left(self) -> float:
        return max(0.0, self._hold_until - self._clock())

    def view(self) -> PaceView:
        level = self.level
        return PaceView(
            server=self.server,
            level=level,
            poll_factor=float(2**level),
            transfers=self.transfer_limit(),
            retry_attempts=self.retry_attempts(),
            reason="normal" if level == 0 else self._reason,
            hold=self.hold_left(),
            troubles=dict(self._troubles),
            cause="normal" if level == 0 else self._cause,
        )

    # -- what the server did ---------------------------------------------------------------

    def answered(
        self, status: int, latency: float | None, kind: str = "", retry_after: float | None = None
    ) -> None:
        """An answer with ``status`` after ``latency`` seconds (None: not to be judged, e.g.
        a download whose first byte waits for a zip to be built), for a request of ``kind``
        (latencies are compared within a kind: a project listing is not a file's HEAD)."""
        if status in TROUBLE_STATUSES:
            after = "" if retry_after is None else f", Retry-After {retry_after:g} s"
            self.trouble(f"status_{status}", f"HTTP {status}{after}", retry_after)
            return
        if self._since is None and status < 500:
            # The first good answer since the trouble: recovery starts.
            self._since = self._clock()
        if latency is None or status >= 400:
            return
        samples = self._latencies.setdefault(kind, collections.deque(maxlen=_SAMPLES))
        if len(samples) >= MIN_SAMPLES:
            median = statistics.median(samples)
            if latency > max(LATENCY_FACTOR * median, median + LATENCY_MARGIN):
                self.trouble(
                    "latency",
                    f"latency {latency:.2f} s, {latency / max(median, 1e-6):.0f}x its median"
                    f" {median:.2f} s",
                )
        samples.append(latency)

    def unanswered(self, error: BaseException) -> None:
        """A request that got no answer (timed out, refused, reset)."""
        if isinstance(error, TimeoutError):
            self.trouble("timeout", "a request timed out")
        else:
            self.trouble("no_answer", f"no answer ({type(error).__name__})")

    def trouble(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        """One sign of trouble: slow down one level (at most once per BUMP_GAP seconds)."""
        now = self._clock()
        self._settle(now)
        self._troubles[kind] += 1
        self._reason = reason
        self._cause = kind
        if retry_after is not None:
            self._hold_until = max(self._hold_until, now + min(retry_after, MAX_HOLD))
        if now - self._last_bump >= BUMP_GAP:
            self._last_bump = now
            self._level = min(MAX_LEVEL, self._level + 1)
        # Recovery waits for the server's next good answer.
        self._since = None

    def _settle(self, now: float) -> None:
        """Come back one level per recovery step since the server answered well again."""
        if self._since is None:
            return
        step = self.recovery / MAX_LEVEL
        while self._level and now - self._since >= step:
            self._level -= 1
            self._since += step

    # -- waiting for the pace ----------------------------------------------------------------

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Held while one request is in flight: waits out a hold, then for a free slot."""
        # A hold may grow while it is waited out (another 503 with its Retry-After).
        left = self.hold_left()
        while left > 0:
            await asyncio.sleep(left)
            left = self.hold_left()
        while (limit := self.transfer_limit()) is not None and self._busy >= limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            # Each waiter checks the limit again (it may have risen or fallen meanwhile).
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)


class ServerPaces:
    """The pace of each server, by URL (no trailing slash), for one daemon.

    ``recovery`` applies to every pace, and follows a reload that changes it.
    """

    def __init__(self, recovery: float = 40.0) -> None:
        self._recovery = recovery
        self._paces: dict[str, ServerPace] = {}

    @property
    def recovery(self) -> float:
        return self._recovery

    @recovery.setter
    def recovery(self, seconds: float) -> None:
        self._recovery = seconds
        for pace in self._paces.values():
            pace.recovery = seconds

    def for_server(self, server: str, *, transfers: int = 8, attempts: int = 5) -> ServerPace:
        """The pace of ``server``, created on first use with ``transfers`` (half of them in
        flight at level 1) and ``attempts`` (tries of one request at level 0)."""
        key = server.rstrip("/")
        pace = self._paces.get(key)
        if pace is None:
            pace = self._paces[key] = ServerPace(
                key, recovery=self._recovery, transfers=transfers, attempts=attempts
            )
        return pace

    def get(self, server: str | None) -> ServerPace | None:
        return None if server is None else self._paces.get(server.rstrip("/"))

    def views(self) -> list[PaceView]:
        return [self._paces[key].view() for key in sorted(self._paces)]
