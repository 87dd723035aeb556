"""Poll cost of an unchanged project of 10,000 sessions: requests and CPU per cycle.

Run: ``python bench/daemon_poll.py [--sessions N] [--cycles K]``. The real daemon
(``sinagot daemon``, XNAT backend) follows a project on the emulator, both in child
processes; its journal already knows every session as done (a lab's steady state).
Each cycle is one ``POST /v1/poll`` on the control socket. The baseline is the cost
of the listing request alone (``XnatStore.list_sessions`` in this process), measured
in the same run; the ratio shows what the daemon adds (diffing against the journal's
last listing, the control calls). Targets: 1 request per cycle, < 200 ms CPU per cycle.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import (
    PASSWORD,
    PROJECT,
    SINAGOT,
    USER,
    DaemonChild,
    label,
    seed_done_journal,
    seed_project,
    wait_until,
    write_config,
)
from sinagot.connectors import XnatStore


def _requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_emulator/counters", timeout=30) as answer:
        return sum(json.load(answer)["requests"].values())


def bench(sessions: int, cycles: int, base: Path) -> None:
    seed_project(base / "xnat", map(label, range(sessions)))
    emulator = subprocess.Popen(
        [SINAGOT, "emulator", "--data", str(base / "xnat"), "--user", f"{USER}:{PASSWORD}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    daemon: DaemonChild | None = None
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().split()[-1]
        with XnatStore(url, base / "cache", user=USER, password=PASSWORD, project=PROJECT) as store:
            listing = [(s.label, s.last_modified) for s in store.list_sessions()]
            baseline = []
            for _ in range(cycles):
                start = time.process_time()
                store.list_sessions()
                baseline.append(time.process_time() - start)
        state = base / "state"
        config = write_config(
            base,
            url,
            {"poll_interval": 3600.0, "state_dir": str(state), "socket": str(base / "d.sock")},
        )
        # The daemon names a dataset after its config file (bench.toml).
        seed_done_journal(state, {"bench": listing}, {"bench": config})
        daemon = DaemonChild(config, base / "d.sock", base / "daemon.log")

        def last_poll() -> float | None:
            datasets = daemon.call("status")["datasets"] if daemon else []
            return datasets[0]["last_poll"] if datasets else None

        wait_until(last_poll, 60, "the first poll")
        requests_before = _requests(url)
        cpu_before = daemon.cpu_seconds()
        wall_before = time.perf_counter()
        for _ in range(cycles):
            marker = last_poll()
            daemon.call("poll")
            # Few status calls per cycle: each costs the daemon a journal query.
            wait_until(lambda m=marker: last_poll() != m, 60, "a poll", interval=0.1)
        cpu = (daemon.cpu_seconds() - cpu_before) / cycles
        wall = (time.perf_counter() - wall_before) / cycles
        requests = (_requests(url) - requests_before) / cycles
        jobs = daemon.call("jobs")
        assert all(job["state"] == "done" for job in jobs), "an unchanged project started jobs"
    finally:
        if daemon is not None:
            daemon.stop()
        emulator.terminate()
        emulator.wait(30)

    listing_ms = 1000 * sorted(baseline)[len(baseline) // 2]
    print(f"sessions: {sessions}, cycles: {cycles}")
    print(f"requests per cycle: {requests:g} (target 1)")
    print(
        f"daemon CPU per cycle: {1000 * cpu:.1f} ms mean (target < 200 ms);"
        f" wall {1000 * wall:.1f} ms (CPU includes the status calls, every 0.1 s, that see"
        " the poll end)"
    )
    print(f"baseline (the listing request alone, client side): {listing_ms:.1f} ms CPU")
    print(f"ratio poll / listing: {1000 * cpu / max(listing_ms, 1e-3):.2f}x")
    figures = {
        "sessions": sessions,
        "cycles": cycles,
        "requests_per_cycle": requests,
        "cpu_ms_per_cycle": round(1000 * cpu, 2),
        "wall_ms_per_cycle": round(1000 * wall, 2),
        "listing_ms": round(listing_ms, 2),
        "ratio_to_listing": round(1000 * cpu / max(listing_ms, 1e-3), 3),
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sinagot-bench-") as tmp:
        bench(args.sessions, args.cycles, Path(tmp))


if __name__ == "__main__":
    main()
