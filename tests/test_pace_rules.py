"""The rules of adaptive polling (PollPace) and back-pressure (ServerPace), on a clock
the tests set: no sleeps, no server."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from sinagot.connectors import ServerPace, ServerPaces
from sinagot.connectors.internals import BUMP_GAP, MAX_HOLD, MAX_LEVEL, MIN_SAMPLES
from sinagot.daemon.internals import PollPace, borrow_limit, fixed_count

INTERVAL = 60.0
MINIMUM = 10.0
PHASE = 0.37
DAY = 24 * 3600.0
# What one listing takes, from its start to its end.
LISTING = 0.3


@dataclass
class Run:
    """One dataset polled over a stretch of time: when it was listed, and how long each
    new session waited to be seen."""

    polls: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


def simulate(
    arrivals: Sequence[float], *, minimum: float, end: float = DAY, start: float = 5.0
) -> Run:
    """The poller's loop on a simulated clock: list, tell the pace what the listing found,
    wait the delay it gives. A session is seen by the first listing that starts after it
    arrived. ``minimum`` equal to INTERVAL is the fixed schedule."""
    pace = PollPace(PHASE)
    run = Run()
    pending = sorted(arrivals)
    now = start
    while now < end:
        run.polls.append(now)
        news = [a for a in pending if a <= now]
        pending = pending[len(news) :]
        run.waits += [now - a for a in news]
        done = now + LISTING
        now = done + pace.after_poll(done, changed=bool(news), interval=INTERVAL, minimum=minimum)
    return run


def bursts(*hours: float, sessions: int = 6, spacing: float = 45.0) -> list[float]:
    """A scanner uploading a study at each of ``hours``: ``sessions`` sessions, ``spacing``
    seconds apart, off the polls' grid."""
    return [h * 3600.0 + 7.3 + i * spacing for h in hours for i in range(sessions)]


# -- PollPace ------------------------------------------------------------------------------


def test_a_quiet_day_is_listed_exactly_on_the_fixed_schedule() -> None:
    adaptive = simulate([], minimum=MINIMUM)
    fixed = simulate([], minimum=INTERVAL)
    assert adaptive.polls == pytest.approx(fixed.polls)
    assert len(adaptive.polls) == fixed_count(5.0, DAY, INTERVAL, PHASE)


@pytest.mark.parametrize("spacing", [10.0, 20.0, 30.0, 45.0])
def test_over_a_day_of_bursts_adaptive_polling_lists_no_more_than_the_fixed_interval(
    spacing: float,
) -> None:
    day = bursts(2, 9, 9.5, 14, 20.2, spacing=spacing)
    adaptive = simulate(day, minimum=MINIMUM)
    fixed = simulate(day, minimum=INTERVAL)
    # Every session seen, by both.
    assert len(adaptive.waits) == len(fixed.waits) == len(day)
    # Never more than one interval's worth of listings ahead of the fixed schedule...
    ahead = borrow_limit(INTERVAL, MINIMUM)
    for count, at in enumerate(adaptive.polls, start=1):
        assert count <= fixed_count(5.0, at, INTERVAL, PHASE) + ahead
    # ...and the debt paid once the bursts are over: the day costs no more listings.
    assert len(adaptive.polls) <= len(fixed.polls)
    # Sessions wait boundedly, even those of a burst that outlasts the budget.
    assert max(adaptive.waits) <= 2.5 * INTERVAL + LISTING


@pytest.mark.parametrize("spacing", [10.0, 20.0])
def test_a_studys_sessions_are_seen_in_half_the_fixed_intervals_median_wait(
    spacing: float,
) -> None:
    # A study uploaded by a scanner: its sessions seconds apart. (Sessions 30 s or more
    # apart gain less: the interval relaxes between them.)
    day = bursts(2, 9, 9.5, 14, 20.2, spacing=spacing)
    adaptive = simulate(day, minimum=MINIMUM)
    fixed = simulate(day, minimum=INTERVAL)
    assert statistics.median(adaptive.waits) <= statistics.median(fixed.waits) / 2


def test_a_burst_brings_the_next_poll_down_to_the_minimum_and_quiet_relaxes_it() -> None:
    pace = PollPace(PHASE)
    kwargs = {"interval": INTERVAL, "minimum": MINIMUM}
    first = pace.after_poll(100.0, changed=False, **kwargs)
    now = 100.0 + first
    # News: the next listing comes min_poll_interval later.
    assert pace.after_poll(now, changed=True, **kwargs) == pytest.approx(MINIMUM)
    now += MINIMUM
    # Quiet listings double the interval (20 s, then 40 s) until the grid's turn is nearer.
    delays = []
    for _ in range(4):
        delay = pace.after_poll(now, changed=False, **kwargs)
        delays.append(delay)
        now += delay
    assert delays[0] == pytest.approx(2 * MINIMUM)
    assert delays[1] <= 4 * MINIMUM
    # Back on the fixed grid: a turn of the dataset's phase.
    turns = now / INTERVAL - PHASE
    assert turns == pytest.approx(round(turns))


@pytest.mark.parametrize("spacing", [10.0, 20.0, 30.0, 45.0])
def test_the_second_session_of_a_burst_is_seen_in_well_under_half_the_interval(
    spacing: float,
) -> None:
    # The first session of a study waits for a turn of the grid, the second one does not.
    run = simulate(bursts(3, sessions=2, spacing=spacing), minimum=MINIMUM, end=4 * 3600.0)
    assert run.waits[1] < INTERVAL / 3


def test_speed_up_is_bounded_by_the_borrow_limit() -> None:
    pace = PollPace(0.0)
    now = 0.0
    delays = []
    # News at every listing, for longer than one interval's worth of early listings.
    for _ in range(3 * borrow_limit(INTERVAL, MINIMUM)):
        delay = pace.after_poll(now, changed=True, interval=INTERVAL, minimum=MINIMUM)
        delays.append(delay)
        now += delay
        assert pace.owed(now, INTERVAL) <= borrow_limit(INTERVAL, MINIMUM)
    # Past the limit, listings come on the grid's turns only.
    assert delays[-1] == pytest.approx(INTERVAL, abs=MINIMUM)


def test_a_slowed_server_is_listed_that_many_intervals_apart_news_or_not() -> None:
    pace = PollPace(PHASE)
    delay = pace.after_poll(100.0, changed=True, interval=INTERVAL, minimum=MINIMUM, slowdown=4.0)
    assert delay >= 3.5 * INTERVAL
    assert delay <= 4.5 * INTERVAL


def test_min_poll_interval_equal_to_the_interval_is_the_fixed_schedule() -> None:
    assert borrow_limit(INTERVAL, INTERVAL) == 0
    day = bursts(1, 2)
    assert simulate(day, minimum=INTERVAL).polls == simulate([], minimum=INTERVAL).polls


# -- ServerPace ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pace(clock: Clock, recovery: float = 40.0) -> ServerPace:
    return ServerPace("https://x.example", recovery=recovery, transfers=8, attempts=5, clock=clock)


def test_a_503_slows_polls_transfers_and_retries_one_step() -> None:
    clock = Clock()
    pace = _pace(clock)
    assert (pace.level, pace.poll_factor(), pace.transfer_limit(), pace.retry_attempts()) == (
        0,
        1.0,
        None,
        5,
    )
    pace.answered(503, 0.05, "GET experiments")
    assert (pace.level, pace.poll_factor(), pace.transfer_limit(), pace.retry_attempts()) == (
        1,
        2.0,
        4,
        4,
    )
    view = pace.view()
    assert view.reason == "HTTP 503" and view.cause == "status_503"
    assert view.troubles == {"status_503": 1}


def test_troubles_together_are_one_step_and_levels_are_capped() -> None:
    clock = Clock()
    pace = _pace(clock)
    for _ in range(10):
        pace.answered(503, 0.05)
    assert pace.level == 1
    assert pace.view().troubles == {"status_503": 10}
    for _ in range(2 * MAX_LEVEL):
        clock.now += BUMP_GAP
        pace.answered(429, 0.05)
    assert pace.level == MAX_LEVEL
    assert pace.transfer_limit() == max(1, 8 >> MAX_LEVEL)
    assert pace.retry_attempts() == 1
    # Never below one try of a request.
    assert pace.retry_attempts(2) == 1


def test_retry_after_holds_the_server_capped() -> None:
    clock = Clock()
    pace = _pace(clock)
    pace.answered(429, 0.05, retry_after=7.0)
    assert pace.hold_left() == pytest.approx(7.0)
    assert "Retry-After 7 s" in pace.view().reason
    clock.now += 3.0
    assert pace.hold_left() == pytest.approx(4.0)
    pace.answered(503, 0.05, retry_after=10 * MAX_HOLD)
    assert pace.hold_left() == pytest.approx(MAX_HOLD)


def test_latency_far_above_the_servers_median_is_trouble_within_its_kind() -> None:
    clock = Clock()
    pace = _pace(clock)
    for _ in range(MIN_SAMPLES):
        pace.answered(200, 0.1, "GET experiments")
        pace.answered(200, 2.5, "GET files")
    # Slower, but not well above its median (4x and one second more): no trouble.
    pace.answered(200, 0.9, "GET experiments")
    # A file listing as slow as it always is: no trouble either.
    pace.answered(200, 2.6, "GET files")
    assert pace.level == 0
    pace.answered(200, 3.0, "GET experiments")
    assert pace.level == 1
    assert pace.view().reason.startswith("latency 3.00 s")
    # Not judged (a download's first byte), or a client error: no sign.
    clock.now += BUMP_GAP
    pace.answered(200, None, "GET experiments")
    pace.answered(404, 30.0, "GET experiments")
    assert pace.level == 1


def test_no_answer_is_trouble_by_kind() -> None:
    clock = Clock()
    pace = _pace(clock)
    pace.unanswered(TimeoutError())
    clock.now += BUMP_GAP
    pace.unanswered(ConnectionResetError())
    assert pace.level == 2
    assert pace.view().troubles == {"timeout": 1, "no_answer": 1}
    assert pace.view().reason == "no answer (ConnectionResetError)"


def test_recovery_is_step_by_step_from_the_first_good_answer() -> None:
    clock = Clock()
    pace = _pace(clock, recovery=40.0)
    for _ in range(MAX_LEVEL):
        pace.answered(503, 0.05)
        clock.now += BUMP_GAP
    step = 40.0 / MAX_LEVEL
    # Time alone is no sign of health: a server polled rarely stays slowed.
    clock.now += 10 * step
    assert pace.level == MAX_LEVEL
    healthy = clock.now
    pace.answered(200, 0.05)
    levels = []
    for k in range(MAX_LEVEL + 1):
        clock.now = healthy + k * step
        levels.append(pace.level)
    assert levels == [MAX_LEVEL, 3, 2, 1, 0]
    assert pace.view().reason == "normal"


def test_trouble_during_recovery_stops_it_until_the_next_good_answer() -> None:
    clock = Clock()
    pace = _pace(clock, recovery=40.0)
    step = 40.0 / MAX_LEVEL
    pace.answered(503, 0.05)
    clock.now += BUMP_GAP
    pace.answered(503, 0.05)
    pace.answered(200, 0.05)
    clock.now += step
    assert pace.level == 1
    pace.answered(503, 0.05)
    assert pace.level == 2
    clock.now += 3 * step
    assert pace.level == 2
    pace.answered(200, 0.05)
    clock.now += step
    assert pace.level == 1


def test_the_paces_are_one_per_server_and_follow_the_recovery_setting() -> None:
    paces = ServerPaces(recovery=40.0)
    a = paces.for_server("https://a.example/xnat/")
    assert paces.for_server("https://a.example/xnat") is a
    assert paces.get("https://a.example/xnat/") is a
    assert paces.get("https://b.example") is None and paces.get(None) is None
    paces.recovery = 8.0
    assert a.recovery == 8.0
    assert [v.server for v in paces.views()] == ["https://a.example/xnat"]


async def test_a_slowed_server_gets_no_more_requests_in_flight_than_allowed() -> None:
    clock = Clock()
    pace = _pace(clock)
    pace.answered(503, 0.05)
    clock.now += BUMP_GAP
    pace.answered(503, 0.05)
    assert pace.transfer_limit() == 2
    busy = 0
    most = 0

    async def request() -> None:
        nonlocal busy, most
        async with pace.slot():
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            busy -= 1

    await asyncio.gather(*(request() for _ in range(12)))
    assert most == 2
