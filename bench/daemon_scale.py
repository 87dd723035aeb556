"""One daemon, many projects on several servers: requests, CPU and RSS per poll cycle, fairness.

Run: ``python bench/daemon_scale.py [--servers 3] [--projects 50] [--sessions 10000]
[--interval 20] [--cycles 3]``. The projects are spread over ``servers`` XNAT emulators
(``sinagot emulator`` child processes), each project holding ``sessions`` sessions
(no files: only the listing matters here). The real daemon (``sinagot daemon`` with one
config per project, a child process) starts with a journal that already knows every
session as done, a lab's steady state, so a poll finds nothing to do. Measured:

- start-up: the time from the daemon's start to the first poll of every project;
- steady state, over ``cycles`` poll intervals: requests per project and poll (the
  emulators' counters), the daemon's CPU seconds per full cycle of polls (every
  project once, from /proc) and its RSS; how many polls each project got (a starved
  project gets fewer) and how they spread over the interval (the busiest tenth of the
  interval holds about 10% of the polls when they are evenly spread);
- per-server limits: every listing delayed by the servers, then every project asked
  to poll at once; the most listings any server had in flight together.

Absolute times on a shared 2-core machine are noise: the figures to read are the
requests per poll, the CPU per cycle against the cost of one listing in this process
(the baseline, measured in the same run) and the spread. Targets: <= 1 request per
project and poll, < 2 s CPU per cycle, RSS < 400 MiB, no project starved. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import (
    PASSWORD,
    SINAGOT,
    USER,
    DaemonChild,
    label,
    seed_done_journal,
    wait_until,
    write_config,
)
from sinagot.connectors import XnatStore
from sinagot.testing import EmulatorServer

# A listing delayed this long by the servers shows how many ran at once on each.
LISTING_DELAY = 1.0
LISTING_ROUTE = "GET /data/projects/{project}/experiments"
# prometheus_client prints counters as floats ("3.0", "1.2e+06" when large).
_POLLS = re.compile(r'^sinagot_polls_total\{dataset="([^"]+)",outcome="ok"\} (\S+)$', re.M)


@dataclass(frozen=True)
class Project:
    name: str  # the project on its server, and the dataset's name in the daemon
    server: int


def _projects(count: int, servers: int) -> list[Project]:
    return [Project(f"P{n:02d}", n % servers) for n in range(count)]


def _seed(data: Path, projects: list[str], sessions: int) -> None:
    """One server's projects, seeded through its store (run in a process of its own)."""
    server = EmulatorServer(data, users={USER: PASSWORD})
    try:
        for project in projects:
            server.create_project(project)
            subject = server.store.create_subject(project, "S")
            # One SQLite transaction per project: a commit per session is ten times slower.
            with server.store._transaction():
                for n in range(sessions):
                    server.store.create_experiment(
                        project, subject.id, label(n), "xnat:mrSessionData"
                    )
    finally:
        server.close()


class Emulator:
    """``sinagot emulator`` serving one data directory, in a child process."""

    def __init__(self, data: Path) -> None:
        self.proc = subprocess.Popen(
            [SINAGOT, "emulator", "--data", str(data), "--user", f"{USER}:{PASSWORD}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().split()[-1]

    def _admin(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if data is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def requests(self) -> dict[str, int]:
        """Requests served so far, by route (``GET /data/projects/{project}/experiments``)."""
        counts: dict[str, int] = self._admin("counters")["requests"]
        return counts

    def delay_listings(self, seconds: float) -> None:
        rule = {"kind": "latency", "method": "GET", "path": "/experiments$", "delay": seconds}
        self._admin("faults", {"rules": [rule] if seconds else []})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _listing(url: str, project: str, cache: Path) -> tuple[list[tuple[str, str]], float]:
    """The project's sessions as the daemon sees them, and the CPU seconds of reading them
    (a store's first listing: its login, the request and every row parsed)."""
    start = time.process_time()
    with XnatStore(url, cache, user=USER, password=PASSWORD, project=project) as store:
        listing = [(s.label, s.last_modified) for s in store.list_sessions()]
        return listing, time.process_time() - start


def _requests(emulators: list[Emulator]) -> Counter[str]:
    """Requests served by every emulator, by route."""
    total: Counter[str] = Counter()
    for emulator in emulators:
        total.update(emulator.requests())
    return total


def _polls(daemon: DaemonChild) -> dict[str, int]:
    return {name: int(float(n)) for name, n in _POLLS.findall(daemon.call("metrics"))}


def _last_polls(daemon: DaemonChild) -> dict[str, float | None]:
    return {d["name"]: d["last_poll"] for d in daemon.call("status")["datasets"]}


def _all_polled_since(daemon: DaemonChild, since: float) -> dict[str, float] | None:
    """Every project's last poll, once each one has polled after ``since``."""
    last = _last_polls(daemon)
    if all(t is not None and t > since for t in last.values()):
        return {name: t for name, t in last.items() if t is not None}
    return None


def _busiest_tenth(times: list[float], interval: float) -> float:
    """The largest share of ``times`` (modulo the interval) in any tenth of the interval."""
    phases = sorted(t % interval for t in times)
    width = interval / 10
    wrapped = phases + [p + interval for p in phases]
    most = 0
    for i, start in enumerate(phases):
        j = i
        while j < len(wrapped) and wrapped[j] < start + width:
            j += 1
        most = max(most, j - i)
    return most / len(phases)


def _most_in_flight(ends: list[float], delay: float) -> int:
    """The most listings in flight together, each taken as the ``delay`` before its end."""
    events = sorted([(end - delay + 0.05, 1) for end in ends] + [(end, -1) for end in ends])
    current = most = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def bench(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    projects = _projects(args.projects, args.servers)
    seed_start = time.perf_counter()
    with ProcessPoolExecutor(min(args.servers, os.cpu_count() or 1)) as pool:
        seeded = [
            pool.submit(
                _seed,
                base / f"xnat{s}",
                [p.name for p in projects if p.server == s],
                args.sessions,
            )
            for s in range(args.servers)
        ]
        for future in seeded:
            future.result()
    seeding = time.perf_counter() - seed_start
    print(f"seeded {args.projects} x {args.sessions} sessions in {seeding:.0f} s", flush=True)

    emulators: list[Emulator] = []
    daemon: DaemonChild | None = None
    try:
        emulators = [Emulator(base / f"xnat{s}") for s in range(args.servers)]
        setup_start = time.perf_counter()
        with ThreadPoolExecutor(args.servers) as threads:
            listed = threads.map(
                lambda p: _listing(emulators[p.server].url, p.name, base / "cache"), projects
            )
            listings = {p.name: listing for p, (listing, _) in zip(projects, listed, strict=True)}
        # The baseline: a listing read in full, client side, while nothing else runs.
        listing_cpu = [
            _listing(emulators[p.server].url, p.name, base / "cache")[1] for p in projects[:5]
        ]
        state = base / "state"
        daemon_table = {
            "poll_interval": args.interval,
            "state_dir": str(state),
            "socket": str(base / "d.sock"),
        }
        configs = [
            write_config(
                base / "projects" / p.name,
                emulators[p.server].url,
                daemon_table,
                project=p.name,
                name=p.name,
            )
            for p in projects
        ]
        seed_done_journal(state, listings, {c.stem: c for c in configs})
        print(
            f"journal filled with every session as done in {time.perf_counter() - setup_start:.0f} s",
            flush=True,
        )
        daemon = DaemonChild(configs, base / "d.sock", base / "daemon.log")

        # Start-up: every project's first poll. A status costs the daemon a count of its
        # journal (500,000 jobs): a few samples only, each project's first seen kept (its
        # next poll comes half an interval later at the soonest).
        first: dict[str, float] = {}

        def every_first_poll() -> bool:
            for name, at in _last_polls(daemon).items():
                if at is not None:
                    first.setdefault(name, at)
            return len(first) == len(projects)

        wait_until(every_first_poll, 300, "the first poll of every project", interval=2.0)
        to_first = sorted(t - daemon.started for t in first.values())
        # Its own part of that time, the rest being the servers' (and the machine's load).
        startup_cpu = daemon.cpu_seconds()

        # Steady state: `cycles` whole intervals once every project is on its schedule.
        time.sleep(args.interval)
        polls_before = _polls(daemon)
        requests_before = _requests(emulators)
        cpu_before = daemon.cpu_seconds()
        time.sleep(args.cycles * args.interval)
        cpu = daemon.cpu_seconds() - cpu_before
        requests = _requests(emulators) - requests_before
        polls_after = _polls(daemon)
        last = _last_polls(daemon)
        rss_mib = daemon.rss_kib() / 1024
        per_project = [polls_after[p.name] - polls_before.get(p.name, 0) for p in projects]
        polls = sum(per_project)
        cycles = polls / len(projects)
        busiest = _busiest_tenth([t for t in last.values() if t is not None], args.interval)

        # Per-server limits: slow listings, every project asked to poll at once.
        for emulator in emulators:
            emulator.delay_listings(LISTING_DELAY)
        asked = time.time()
        daemon.call("poll")
        ends = wait_until(
            lambda: _all_polled_since(daemon, asked),
            300,
            "every project polled with slow listings",
            interval=0.25,
        )
        for emulator in emulators:
            emulator.delay_listings(0)
        server_of = {p.name: p.server for p in projects}
        in_flight = max(
            _most_in_flight([t for name, t in ends.items() if server_of[name] == s], LISTING_DELAY)
            for s in range(args.servers)
        )
        jobs = daemon.call("jobs", limit=10)
        assert all(job["state"] == "done" for job in jobs), "an unchanged project started jobs"
    finally:
        code = daemon.stop() if daemon is not None else None
        for emulator in emulators:
            emulator.stop()

    baseline_ms = 1000 * statistics.median(listing_cpu)
    cpu_per_cycle = cpu / max(cycles, 1e-9)
    # Per listing request, from the servers' own counts (a window the daemon's poll counts,
    # read a moment apart, cannot match exactly): a poll is one listing and nothing else.
    listing_requests = requests[LISTING_ROUTE]
    requests_per_poll = requests.total() / max(listing_requests, 1)
    print(
        f"{args.servers} servers, {args.projects} projects x {args.sessions} sessions,"
        f" poll interval {args.interval:g} s, {cycles:.2f} cycles measured; daemon exit {code}"
    )
    print(
        f"requests per project and poll: {requests_per_poll:.3f} (target <= 1):"
        f" {requests.total()} requests, {listing_requests} of them listings, while the"
        f" daemon counted {polls} polls"
    )
    print(
        f"daemon CPU per full cycle: {cpu_per_cycle:.3f} s (target < 2 s);"
        f" {1000 * cpu_per_cycle / args.projects:.1f} ms per project poll,"
        f" {1000 * cpu_per_cycle / args.projects / max(baseline_ms, 1e-3):.2f}x the"
        f" client-side CPU of reading one listing in full here ({baseline_ms:.1f} ms)"
    )
    print(f"daemon RSS: {rss_mib:.0f} MiB (target < 400 MiB)")
    print(
        f"start to first poll: {to_first[0]:.2f} s first project, "
        f"{statistics.median(to_first):.2f} s median, {to_first[-1]:.2f} s last;"
        f" the daemon's CPU until then: {startup_cpu:.1f} s"
    )
    print(
        f"polls per project over the window: {min(per_project)}..{max(per_project)};"
        f" busiest tenth of the interval: {100 * busiest:.0f}% of the polls (even: 10%)"
    )
    print(f"most listings in flight on one server: {in_flight}")
    starved = min(per_project) < max(args.cycles - 1, 1)
    return {
        "servers": args.servers,
        "projects": args.projects,
        "sessions_per_project": args.sessions,
        "poll_interval_s": args.interval,
        "cycles_measured": round(cycles, 2),
        "requests_per_project_per_poll": round(requests_per_poll, 3),
        "daemon_cpu_s_per_poll_cycle": round(cpu_per_cycle, 3),
        "listing_cpu_ms_client_baseline": round(baseline_ms, 1),
        "daemon_rss_mib": round(rss_mib, 1),
        "start_to_first_poll_s": {
            "first": round(to_first[0], 2),
            "median": round(statistics.median(to_first), 2),
            "last": round(to_first[-1], 2),
        },
        "daemon_cpu_s_to_first_polls": round(startup_cpu, 2),
        "polls_per_project": {"min": min(per_project), "max": max(per_project)},
        "busiest_tenth_of_interval_share": round(busiest, 3),
        "max_listings_in_flight_per_server": in_flight,
        "targets_met": {
            "requests": requests_per_poll <= 1,
            "cpu": cpu_per_cycle < 2,
            "rss": rss_mib < 400,
            "no_starvation": not starved,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0, help="poll interval, seconds")
    parser.add_argument("--cycles", type=int, default=3, help="poll intervals measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sinagot-scale-") as tmp:
        result = bench(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
