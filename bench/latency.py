"""Latency from "upload finished" to "derivative + provenance visible", and burst throughput.

Run: ``python bench/latency.py [--sessions 30] [--span 180] [--burst 200]``

The real daemon (``sinagot daemon CONFIG``, XNAT backend, a Dask LocalCluster of
threads) follows a project of the emulator (a thread of this process, ``production``
profile by default: a loaded XNAT's latency on every request), polling every
``--poll-interval`` (10) seconds. One trivial script copies each session's small
input.

1. **Latency.** ``--sessions`` sessions arrive at seeded random times over ``--span``
   seconds, so at random phases of the poll. For each: the time from the moment its
   files are stored on the emulator to the moment its derivative resource and its
   provenance (``PROVENANCE/<label>.json``, the commit marker) are both visible there,
   read straight from the emulator's index every 20 ms. Printed: median, p95, max
   (target: p95 < 12 s), and where the time goes, from each job's journal history:
   waiting for the next poll, queued, fetching, running, uploading (+ settling).
   The baseline, from the same run: half the poll interval, what an instantaneous job
   would cost on average.
2. **Throughput.** ``--burst`` sessions stored at once, then one poll asked for: sessions
   per minute until every one is visible, for ``max_concurrent_jobs`` 1, 2 and 4 (each
   run bounded by ``--burst-limit`` seconds; a run cut short reports its rate so far).

Every wait is bounded; the last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
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
    derivative_visible,
    label,
    percentile,
    start_daemon,
    watch_arrivals,
)
from sinagot.testing import EmulatorServer

PHASES = ("fetching", "running", "uploading", "done")


def _history(daemon: DaemonChild) -> dict[str, dict[str, float]]:
    """Session -> state -> when its (last) job entered it, from the journal."""
    found: dict[str, dict[str, float]] = {}
    for job in daemon.call("jobs", limit=1000):
        detail = daemon.call("job", job["id"])
        times = {"queued": job["created"]}
        for transition in detail["history"]:
            times.setdefault(transition["state"], transition["at"])
        found[job["session"]] = times
    return found


def latency(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    server = EmulatorServer(
        base / "xnat", users={USER: PASSWORD}, profile=args.profile, seed=args.seed
    )
    with server.running_in_thread():
        server.create_project(PROJECT)
        daemon = start_daemon(base, server, args.poll_interval, 4)
        try:
            # One session first, unmeasured: the scripts' first import, the first job.
            warm: dict[int, float] = {}
            watch_arrivals(server, {}, warm, [(0.0, 0)], {}, 120)
            server.reset_counters()
            rng = random.Random(args.seed)
            arrivals = [(rng.uniform(0, args.span), n) for n in range(1, args.sessions + 1)]
            added: dict[int, float] = {}
            seen: dict[int, float] = {}
            watch_arrivals(server, {}, seen, arrivals, added, args.span + 120)
            counts = server.request_counts()
            history = _history(daemon)
        finally:
            code = daemon.stop()

    waits = [seen[n] - added[n] for n in added]
    # Where the time goes: added -> queued (the poll that saw it) -> each phase -> visible.
    parts: dict[str, list[float]] = {p: [] for p in ("poll wait", "queued", *PHASES[:-1])}
    for n in added:
        times = history[label(n)]
        marks = [added[n], times["queued"], *(times.get(p, seen[n]) for p in PHASES[:-1]), seen[n]]
        for name, (a, b) in zip(parts, itertools.pairwise(marks), strict=False):
            parts[name].append(b - a)
    median, p95, worst = statistics.median(waits), percentile(waits, 0.95), max(waits)
    print(
        f"latency: {len(waits)} sessions over {args.span:g} s, poll every {args.poll_interval:g} s,"
        f" profile {args.profile}, seed {args.seed} (daemon exit code {code})"
    )
    print(
        f"upload finished -> derivative + provenance visible: median {median:.2f} s, "
        f"p95 {p95:.2f} s, max {worst:.2f} s (target p95 < 12 s -> "
        f"{'OK' if p95 < 12 else 'MISSED'})"
    )
    baseline = args.poll_interval / 2
    print(
        f"baseline (half the poll interval: the mean wait of an instantaneous job): "
        f"{baseline:.1f} s; ratio median / baseline: {median / baseline:.2f}x"
    )
    breakdown = {name: statistics.median(values) for name, values in parts.items()}
    print(
        "median per part: "
        + ", ".join(f"{name} {value:.2f} s" for name, value in breakdown.items())
        + f"; job (queued -> visible) median {statistics.median(seen[n] - history[label(n)]['queued'] for n in added):.2f} s,"
        f" max {max(seen[n] - history[label(n)]['queued'] for n in added):.2f} s"
    )
    job_times = [seen[n] - history[label(n)]["queued"] for n in added]
    listings = counts.pop("GET /data/projects/{project}/experiments", 0)
    print(
        f"requests per job: {sum(counts.values()) / len(added):.1f} (and {listings} project"
        " listings in all): "
        + ", ".join(
            f"{n / len(added):.1f} x {route.replace('/data/projects/{project}/experiments/{experiment}', '~')}"
            for route, n in sorted(counts.items(), key=lambda i: -i[1])
        )
    )
    return {
        "latency_median_s": round(median, 2),
        "latency_p95_s": round(p95, 2),
        "latency_max_s": round(worst, 2),
        "poll_wait_median_s": round(breakdown["poll wait"], 2),
        "job_median_s": round(statistics.median(job_times), 2),
        "job_p95_s": round(percentile(job_times, 0.95), 2),
        "parts_median_s": {k: round(v, 3) for k, v in breakdown.items()},
    }


def burst(args: argparse.Namespace, base: Path, jobs: int) -> dict[str, Any]:
    server = EmulatorServer(
        base / "xnat", users={USER: PASSWORD}, profile=args.profile, seed=args.seed
    )
    with server.running_in_thread():
        server.create_project(PROJECT)
        daemon = start_daemon(base, server, args.poll_interval, jobs)
        pending: dict[int, float] = {}
        seen: dict[int, float] = {}
        try:
            for n in range(args.burst):
                pending[n] = add_session(server, n)
            start = time.time()
            daemon.call("poll")
            # Check visibility every 0.5 s: reading 200 sessions' resources takes a while.
            limit = time.monotonic() + args.burst_limit
            while pending and time.monotonic() < limit:
                for n in list(pending):
                    if derivative_visible(server, n):
                        seen[n] = time.time()
                        del pending[n]
                time.sleep(0.5)
            elapsed = (max(seen.values()) if seen else time.time()) - start
        finally:
            daemon.stop()
    rate = 60 * len(seen) / max(elapsed, 1e-9)
    cut = f" (cut at {args.burst_limit:g} s)" if pending else ""
    print(
        f"burst of {args.burst}, max_concurrent_jobs {jobs}: {len(seen)} visible in "
        f"{elapsed:.1f} s{cut}: {rate:.0f} sessions/min"
    )
    return {
        "jobs": jobs,
        "visible": len(seen),
        "seconds": round(elapsed, 1),
        "per_min": round(rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument(
        "--span", type=float, default=180.0, help="seconds the arrivals spread over"
    )
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--burst-jobs", default="1,2,4", help="max_concurrent_jobs values")
    parser.add_argument("--burst-limit", type=float, default=300.0)
    parser.add_argument("--profile", default="production")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    figures: dict[str, Any] = {"bench": "latency", "profile": args.profile}
    with tempfile.TemporaryDirectory(prefix="sinagot-latency-") as tmp:
        if args.sessions:
            figures.update(latency(args, Path(tmp) / "latency"))
        bursts = []
        for jobs in (int(j) for j in args.burst_jobs.split(",") if j) if args.burst else ():
            bursts.append(burst(args, Path(tmp) / f"burst-{jobs}", jobs))
        if bursts:
            base_rate = bursts[0]["per_min"]
            print(
                "throughput ratio vs the first: "
                + ", ".join(
                    f"{b['jobs']} jobs {b['per_min'] / max(base_rate, 1e-9):.2f}x" for b in bursts
                )
            )
        figures["burst"] = bursts
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
