"""A pipeline change that makes 1,000 done sessions stale: the drain, and new sessions during it.

Run: ``python bench/pipeline_change.py [--sessions 1000] [--new 10] [--jobs 4]
[--poll-interval 2] [--profile fast]``. The real daemon (``sinagot daemon CONFIG``, XNAT
backend, a Dask LocalCluster of threads) follows a project of the emulator (a thread of this
process) with one copying script.

1. **Set-up, and the baseline of the drain:** the daemon processes ``--sessions`` sessions
   from scratch (downloads, runs, uploads): their first processing time.
2. **Idle latency, the baseline of the latency:** ``--new`` sessions arrive one at a time at
   random moments while nothing else runs; for each, the time from its files stored on the
   emulator to its derivative and provenance visible there.
3. **The change:** the script gains a parameter on disk (no reload: the daemon sees it).
   Every done session becomes stale. Measured: the time until none is stale any more
   (the drain), its ratio to the first processing, the inputs downloaded meanwhile (0: they
   come from the cache), and the latency of ``--new`` more sessions arriving during the
   drain, against the idle one (new sessions go first: the ratio stays near 1).

The last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import (
    PASSWORD,
    PROJECT,
    USER,
    DaemonChild,
    add_session,
    percentile,
    start_daemon,
    wait_until,
    watch_arrivals,
)
from sinagot.daemon.internals import MAX_JOBS_LISTED
from sinagot.testing import EmulatorServer

_CHANGED_SCRIPT = """from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "copy.csv")
    PARAMETERS = {"version": 2}

    def run(self):
        self.path.output.write_bytes(self.path.input.read_bytes())
"""


def _jobs(daemon: DaemonChild) -> dict[str, int]:
    (dataset,) = daemon.call("status")["datasets"]
    jobs: dict[str, int] = dataset["jobs"]
    return jobs


def _settled(daemon: DaemonChild, done: int) -> Callable[[], bool]:
    def check() -> bool:
        jobs = _jobs(daemon)
        return jobs["done"] >= done and sum(jobs.values()) == jobs["done"]

    return check


def _input_downloads(counts: dict[str, int]) -> int:
    return sum(
        n
        for route, n in counts.items()
        if route.startswith("GET ") and "/scans/{scan}/resources/{resource}/files" in route
    )


def _arrivals(rng: random.Random, first: int, count: int, span: float) -> list[tuple[float, int]]:
    return sorted((rng.uniform(0, span), first + k) for k in range(count))


def bench(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    server = EmulatorServer(
        base / "xnat", users={USER: PASSWORD}, profile=args.profile, seed=args.seed
    )
    with server.running_in_thread():
        server.create_project(PROJECT)
        for n in range(args.sessions):
            add_session(server, n)
        begin = time.monotonic()
        daemon = start_daemon(
            base, server, args.poll_interval, args.jobs, pipeline_check_interval=1.0
        )
        try:
            wait_until(_settled(daemon, args.sessions), args.limit, "the first processing", 0.5)
            first = time.monotonic() - begin
            print(f"first processing of {args.sessions} sessions: {first:.1f} s")

            # Idle: sessions arrive one at a time, nothing else to do.
            added: dict[int, float] = {}
            seen: dict[int, float] = {}
            span = args.new * args.poll_interval
            idle_arrivals = _arrivals(rng, args.sessions, args.new, span)
            watch_arrivals(server, {}, seen, idle_arrivals, added, span + args.limit)
            idle = [seen[n] - added[n] for n in added]

            # The change, then as many sessions arriving during the drain.
            server.reset_counters()
            script = base / "scripts" / "EEG" / "copy.py"
            script.write_text(_CHANGED_SCRIPT)
            changed_at = time.monotonic()
            changed_wall = time.time()

            def noticed() -> bool:
                # Stale sessions waiting, or (a small run drains between two looks) already
                # processed again: no session arrives between the change and this wait.
                if _jobs(daemon)["stale"] > 0:
                    return True
                jobs = daemon.call("jobs", limit=MAX_JOBS_LISTED)
                return any(job["updated"] > changed_wall for job in jobs)

            wait_until(noticed, 60, "the change of the pipeline to be noticed", 0.1)
            drained: list[float] = []

            def tick() -> None:
                if not drained and not _jobs(daemon)["stale"] and time.monotonic() > changed_at:
                    drained.append(time.monotonic() - changed_at)

            during_added: dict[int, float] = {}
            during_seen: dict[int, float] = {}
            # Spread over the first part of the drain, which lasts about the first processing.
            during_arrivals = _arrivals(rng, args.sessions + args.new, args.new, first / 2)
            watch_arrivals(
                server, {}, during_seen, during_arrivals, during_added, args.limit, tick=tick
            )
            wait_until(_settled(daemon, args.sessions + 2 * args.new), args.limit, "the drain", 0.5)
            drain = drained[0] if drained else time.monotonic() - changed_at
            counts = server.request_counts()
        finally:
            code = daemon.stop()
    during = [during_seen[n] - during_added[n] for n in during_added]
    figures = {
        "sessions": args.sessions,
        "first_processing_s": round(first, 1),
        "drain_s": round(drain, 1),
        "drain_ratio": round(drain / first, 2),
        # Each new session downloads its own input; the stale ones should download none.
        "drain_input_downloads": _input_downloads(counts),
        "stale_input_downloads": max(0, _input_downloads(counts) - args.new),
        "idle_latency_median_s": round(statistics.median(idle), 2),
        "idle_latency_max_s": round(max(idle), 2),
        "drain_latency_median_s": round(statistics.median(during), 2),
        "drain_latency_p95_s": round(percentile(during, 0.95), 2),
        "drain_latency_max_s": round(max(during), 2),
        "latency_ratio": round(statistics.median(during) / statistics.median(idle), 2),
        "daemon_exit": code,
    }
    print(
        f"drain of {args.sessions} stale sessions: {drain:.1f} s, {figures['drain_ratio']}x the"
        f" first processing; input downloads meanwhile: {figures['drain_input_downloads']}"
        f" ({args.new} of them the new sessions')"
    )
    print(
        f"new-session latency: idle median {figures['idle_latency_median_s']} s (max"
        f" {figures['idle_latency_max_s']}), during the drain median"
        f" {figures['drain_latency_median_s']} s (p95 {figures['drain_latency_p95_s']}, max"
        f" {figures['drain_latency_max_s']}): {figures['latency_ratio']}x"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--new", type=int, default=10, help="new sessions, idle and in the drain")
    parser.add_argument("--jobs", type=int, default=4, help="max_concurrent_jobs")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=float, default=1800.0, help="seconds any wait may take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sinagot-pipeline-change-") as tmp:
        figures = {"bench": "pipeline_change", "profile": args.profile, **bench(args, Path(tmp))}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
