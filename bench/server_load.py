"""What the daemon costs a busy XNAT: a day of polling, fixed vs adaptive, then a degraded server.

Run: ``python bench/server_load.py [--minutes 4] [--poll-interval 2] [--tiny]``

The real daemon (``sinagot daemon CONFIG``, XNAT backend) follows one project of the
emulator (a thread of this process, ``production`` profile: a loaded XNAT's latency on
every request). A day is compressed into ``--minutes`` minutes: 24 "hours" of quiet,
and ``--studies`` studies uploaded by a scanner at seeded random hours, each
``--sessions-per-study`` sessions ``--spacing`` poll intervals apart. ``--poll-interval``
stands for a production 60 s (the default 2 s is a 30x compression), and
``min_poll_interval`` for 10 s (a sixth of it).

1. **A day, twice.** Once with a fixed interval (``min_poll_interval = poll_interval``,
   the baseline) and once with adaptive polling, each against a fresh emulator and the
   same arrivals. Reported: polls (the daemon's listings) per project per hour, the
   listing requests the server got (with retries and the jobs' lookups of a session)
   and every request per hour, and new-session latency, from the moment its files are
   stored to the moment the daemon's journal has a job for it (the listing that saw
   it): median and p95 over all sessions, and over the studies' later sessions. Ratio:
   adaptive median over fixed median, at the ratio of their polls.
2. **A degraded server.** Right after the adaptive day: the healthy request rate over
   ``--phase`` seconds; then ``--phase`` seconds during which half the project listings
   answer 503 and every other request waits 3 s; requests per minute against the
   healthy ones, and the server's pace the daemon shows. Then the faults are lifted:
   seconds until the daemon lists the project again, and until its pace is back to
   normal (``server_recovery``, 40 s by default).

Every wait is bounded; the last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import (
    PASSWORD,
    PROJECT,
    USER,
    DaemonChild,
    add_session,
    label,
    percentile,
    start_daemon,
    wait_until,
)
from sinagot.testing import EmulatorServer, FaultRule

LISTING_ROUTE = "GET /data/projects/{project}/experiments"
LISTING_PATH = rf"/projects/{PROJECT}/experiments$"
HOURS = 24
_POLLS = re.compile(r'^sinagot_polls_total\{dataset="[^"]+",outcome="\w+"\} (\d+)(?:\.0)?$', re.M)


def _listings(server: EmulatorServer) -> int:
    return server.request_counts().get(LISTING_ROUTE, 0)


def _polls(daemon: DaemonChild) -> int:
    """The daemon's listings of its project (ok or not), from its metrics."""
    return sum(int(n) for n in _POLLS.findall(daemon.call("metrics")))


def _requests(server: EmulatorServer) -> int:
    return sum(server.request_counts().values())


def _arrivals(args: argparse.Namespace) -> list[tuple[float, int, int]]:
    """(seconds from the day's start, session number, its place in its study)."""
    day = args.minutes * 60.0
    rng = random.Random(args.seed)
    study_length = args.sessions_per_study * args.spacing * args.poll_interval
    # Studies start in the day's first 80 %, so that the day ends quiet (the debt of
    # early listings is paid) and each study at least a poll interval from the others.
    starts: list[float] = []
    while len(starts) < args.studies:
        start = rng.uniform(0.02 * day, 0.8 * day)
        if all(abs(start - s) > study_length + 3 * args.poll_interval for s in starts):
            starts.append(start)
    arrivals = []
    n = 1
    for start in sorted(starts):
        for place in range(args.sessions_per_study):
            arrivals.append((start + place * args.spacing * args.poll_interval, n, place))
            n += 1
    return arrivals


def _seen(daemon: DaemonChild) -> dict[str, float]:
    """Session -> when the daemon's journal got a job for it."""
    return {job["session"]: job["created"] for job in daemon.call("jobs", limit=10000)}


def _day(args: argparse.Namespace, base: Path, minimum: float, degrade: bool) -> dict[str, Any]:
    server = EmulatorServer(
        base / "xnat", users={USER: PASSWORD}, profile=args.profile, seed=args.seed
    )
    figures: dict[str, Any] = {}
    with server.running_in_thread():
        server.create_project(PROJECT)
        daemon = start_daemon(
            base,
            server,
            args.poll_interval,
            4,
            min_poll_interval=minimum,
            server_recovery=args.server_recovery,
        )
        try:
            # One session first, unmeasured: the scripts' first import, the first job.
            add_session(server, 0)
            wait_until(lambda: label(0) in _seen(daemon), 120, "the warm-up session", 0.1)
            arrivals = _arrivals(args)
            queue = list(arrivals)
            added: dict[int, float] = {}
            day = args.minutes * 60.0
            server.reset_counters()
            polls = _polls(daemon)
            start = time.monotonic()
            for _ in range(int(day / 0.02) + 1):
                now = time.monotonic() - start
                if now >= day:
                    break
                while queue and queue[0][0] <= now:
                    _, n, _ = queue.pop(0)
                    added[n] = add_session(server, n)
                time.sleep(0.02)
            counts = server.request_counts()
            polls = _polls(daemon) - polls
            # Sessions of the day's end may still be waiting for their listing.
            wait_until(
                lambda: {label(n) for n in added} <= _seen(daemon).keys(),
                10 * args.poll_interval + 30,
                "every session seen",
                0.2,
            )
            seen = _seen(daemon)
            waits = {n: seen[label(n)] - added[n] for n in added}
            later = [waits[n] for _, n, place in arrivals if place > 0]
            listings = counts.get(LISTING_ROUTE, 0)
            figures = {
                "polls_per_project_hour": round(polls / HOURS, 2),
                # Server side: the polls, their retries, and the jobs' lookups of a session.
                "listings_per_project_hour": round(listings / HOURS, 2),
                "requests_per_hour": round(sum(counts.values()) / HOURS, 1),
                "latency_median_s": round(statistics.median(waits.values()), 3),
                "latency_p95_s": round(percentile(list(waits.values()), 0.95), 3),
                "burst_later_median_s": round(statistics.median(later), 3),
                "burst_later_p95_s": round(percentile(later, 0.95), 3),
                "sessions": len(waits),
            }
            if degrade:
                figures["degraded"] = _degraded(args, server, daemon)
        finally:
            figures["daemon_exit"] = daemon.stop()
    return figures


def _pace(daemon: DaemonChild) -> dict[str, Any]:
    (server,) = daemon.call("status")["servers"]
    pace: dict[str, Any] = server
    return pace


def _rate(server: EmulatorServer, seconds: float) -> tuple[float, float]:
    """Requests, and project listings, per minute over the next ``seconds``."""
    requests, listings = _requests(server), _listings(server)
    time.sleep(seconds)
    scale = 60.0 / seconds
    return (
        (_requests(server) - requests) * scale,
        (_listings(server) - listings) * scale,
    )


def _degraded(
    args: argparse.Namespace, server: EmulatorServer, daemon: DaemonChild
) -> dict[str, Any]:
    healthy, healthy_listings = _rate(server, args.phase)
    server.set_faults(
        [
            FaultRule("status", path=LISTING_PATH, status=503, retry_after=None, probability=0.5),
            FaultRule("latency", delay=3.0),
        ],
        seed=args.seed,
    )
    degraded, degraded_listings = _rate(server, args.phase)
    slowed = _pace(daemon)
    faults = server.fault_counts()
    server.set_faults([])
    lifted = time.monotonic()
    listed = _listings(server)
    wait_until(lambda: _listings(server) > listed, 600, "a listing after the faults", 0.1)
    first_listing = time.monotonic() - lifted
    wait_until(lambda: _pace(daemon)["level"] == 0, 600, "the pace back to normal", 0.1)
    normal = time.monotonic() - lifted
    return {
        "healthy_requests_per_min": round(healthy, 1),
        "healthy_listings_per_min": round(healthy_listings, 1),
        "degraded_requests_per_min": round(degraded, 1),
        "degraded_listings_per_min": round(degraded_listings, 1),
        "faults": faults,
        "pace_when_degraded": {k: slowed[k] for k in ("level", "poll_factor", "cause", "reason")},
        "first_listing_after_s": round(first_listing, 1),
        "pace_normal_after_s": round(normal, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the day, per mode")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--sessions-per-study", type=int, default=5)
    parser.add_argument(
        "--spacing", type=float, default=0.25, help="poll intervals between a study's sessions"
    )
    parser.add_argument("--phase", type=float, default=30.0, help="seconds of each rate window")
    parser.add_argument("--server-recovery", type=float, default=40.0)
    parser.add_argument("--profile", default="production")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tiny", action="store_true", help="a one-minute day, short phases (a smoke run)"
    )
    args = parser.parse_args()
    if args.tiny:
        args.minutes, args.studies, args.phase, args.server_recovery = 1.0, 2, 10.0, 8.0
    minimum = args.poll_interval / 6
    figures: dict[str, Any] = {
        "bench": "server_load",
        "profile": args.profile,
        "minutes": args.minutes,
        "poll_interval": args.poll_interval,
        "min_poll_interval": round(minimum, 3),
    }
    with tempfile.TemporaryDirectory(prefix="sinagot-server-load-") as tmp:
        fixed = _day(args, Path(tmp) / "fixed", args.poll_interval, degrade=False)
        adaptive = _day(args, Path(tmp) / "adaptive", minimum, degrade=True)
    figures["fixed"], figures["adaptive"] = fixed, adaptive
    for name, run in (("fixed", fixed), ("adaptive", adaptive)):
        print(
            f"{name:>8}: {run['polls_per_project_hour']:.1f} polls per project per hour"
            f" ({run['listings_per_project_hour']:.1f} listing requests,"
            f" {run['requests_per_hour']:.0f} requests/h in all); new session seen after"
            f" median {run['latency_median_s']:.2f} s, p95 {run['latency_p95_s']:.2f} s"
            f" (a study's later sessions: median {run['burst_later_median_s']:.2f} s,"
            f" p95 {run['burst_later_p95_s']:.2f} s), {run['sessions']} sessions"
        )
    latency_ratio = adaptive["latency_median_s"] / max(fixed["latency_median_s"], 1e-9)
    listings_ratio = adaptive["polls_per_project_hour"] / max(fixed["polls_per_project_hour"], 1e-9)
    figures["latency_ratio"] = round(latency_ratio, 3)
    figures["polls_ratio"] = round(listings_ratio, 3)
    print(
        f"ratio adaptive/fixed: median latency {latency_ratio:.2f}x at {listings_ratio:.2f}x"
        f" the polls (target: <= 0.5x at <= 1.0x -> "
        f"{'OK' if latency_ratio <= 0.5 and listings_ratio <= 1.0 else 'MISSED'})"
    )
    degraded = adaptive["degraded"]
    rate_ratio = degraded["degraded_requests_per_min"] / max(
        degraded["healthy_requests_per_min"], 1e-9
    )
    figures["degraded_rate_ratio"] = round(rate_ratio, 3)
    print(
        f"degraded (503 on half the listings, 3 s latency): {degraded['degraded_requests_per_min']:.1f}"
        f" requests/min ({degraded['degraded_listings_per_min']:.1f} listings) against"
        f" {degraded['healthy_requests_per_min']:.1f} ({degraded['healthy_listings_per_min']:.1f})"
        f" healthy: {rate_ratio:.2f}x (target <= 1.0x); pace {degraded['pace_when_degraded']}"
    )
    print(
        f"recovery: listed again {degraded['first_listing_after_s']:.1f} s after the faults"
        f" were lifted, pace normal after {degraded['pace_normal_after_s']:.1f} s"
        f" (server_recovery {args.server_recovery:g} s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
