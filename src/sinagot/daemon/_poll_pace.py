"""Adaptive polling of one dataset: sooner after news, never more listings than a fixed interval.

Sessions arrive in bursts (a scanner uploads a study, then nothing for hours). A
fixed ``poll_interval`` makes each new session wait half an interval on average. A
:class:`PollPace` shortens the wait during a burst and pays for it afterwards:

- **the grid.** The fixed schedule lists the dataset on its turns, ``(k + phase) *
  poll_interval``, the first one at least half an interval after the first listing
  (see :func:`fixed_count`). A quiet dataset is listed on exactly those turns.
- **sooner after news.** After a listing that found new or changed sessions, the
  next one comes ``min_poll_interval`` later; after each quiet one the interval
  doubles, back to the grid's turns once it would reach the next one.
- **a budget.** Listings beyond the grid's turns so far are a debt, at most
  :func:`borrow_limit` of them: at the limit, the next listing waits for its turn.
  While in debt, a quiet listing skips one turn (an interval of up to two and a half
  ``poll_interval``, so new sessions still wait boundedly), until the debt is paid:
  once a burst is over, the listings of the dataset are again as many as on the fixed
  schedule, never more. Turns missed (a slow server, failed listings) are no credit
  to spend later.
- **the server's pace.** While back-pressure slows the server (a factor above 1, see
  :class:`sinagot.connectors.ServerPace`), no listing comes early and the turns are
  that many intervals apart.

Pure arithmetic on the times given: the daemon's poller passes its loop's clock,
tests a fake one.
"""

from __future__ import annotations

import math

__all__ = ["PollPace", "borrow_limit", "fixed_count"]


def borrow_limit(interval: float, minimum: float) -> int:
    """Listings a dataset may be ahead of the fixed schedule: one base interval's worth of
    listings at the minimum interval (0: ``minimum`` is the interval, no speed-up)."""
    if minimum >= interval:
        return 0
    return math.ceil(interval / minimum) - 1


def _turn(now: float, gap: float, interval: float, phase: float) -> float:
    """The first turn of the grid at least ``gap`` after ``now``."""
    return (math.ceil((now + gap) / interval - phase) + phase) * interval


def fixed_count(start: float, now: float, interval: float, phase: float) -> int:
    """Listings of the fixed schedule from ``start`` to ``now``: the first at ``start``,
    then every turn from half an interval later on."""
    if now < start:
        return 0
    first = math.ceil((start + interval / 2) / interval - phase)
    last = math.floor(now / interval - phase)
    return 1 + max(0, last - first + 1)


class PollPace:
    """When to list one dataset next (see the module docstring), at grid ``phase`` in [0, 1)."""

    def __init__(self, phase: float) -> None:
        self.phase = phase
        self._start: float | None = None
        self._polls = 0
        # The interval since the last listing that found news (the base one: none yet).
        self._gap: float | None = None

    def owed(self, now: float, interval: float) -> int:
        """Listings made beyond the fixed schedule's by ``now``."""
        if self._start is None:
            return 0
        return self._polls - fixed_count(self._start, now, interval, self.phase)

    def after_poll(
        self,
        now: float,
        *,
        changed: bool,
        interval: float,
        minimum: float,
        slowdown: float = 1.0,
    ) -> float:
        """Seconds from ``now``, the end of a listing, to the next one.

        ``changed``: it found new or changed sessions; ``interval`` and ``minimum``:
        ``[daemon] poll_interval`` and ``min_poll_interval``; ``slowdown``: the server's
        poll factor (1: its normal pace).
        """
        if self._start is None:
            self._start = now
        self._polls += 1
        owed = self.owed(now, interval)
        if owed < 0:
            # Turns missed are not banked: the budget only lends.
            self._polls -= owed
            owed = 0
        gap = self._gap if self._gap is not None else interval
        gap = minimum if changed else min(interval, 2 * gap)
        self._gap = gap
        if slowdown > 1:
            return _turn(now, (slowdown - 0.5) * interval, interval, self.phase) - now
        if gap < interval:
            nearest = _turn(now, min(minimum, interval / 2), interval, self.phase)
            if now + gap >= nearest or owed >= borrow_limit(interval, minimum):
                return nearest - now
            return gap
        turn = _turn(now, interval / 2, interval, self.phase)
        if owed > 0 and not changed:
            turn += interval
        return turn - now
