"""Bounded soak: sessions keep arriving on the server; the daemon's RSS and open fds stay flat.

Run: ``python bench/daemon_soak.py [--seconds 600] [--rate 2] [--window 200]``. The
real daemon (``sinagot daemon``, XNAT backend, Dask LocalCluster of threads) follows
a project on the emulator (a thread of this process) while new sessions are added at
``rate`` per second and some recent ones change. The project keeps its newest
``window`` sessions (older ones are deleted from the server, as a lab archiving its
recordings would), so what the daemon must hold for the project itself stays the same
size and any growth comes from the jobs; ``--window 0`` keeps every session instead.
After a warm-up the daemon's RSS and fd count are the baseline; at the end (every job
done) both are measured again and printed as ratios (target: flat, about 1.0x), with
the RSS slope of each half of the run. Status and metrics are read over the control
socket throughout, as a monitoring system would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import PASSWORD, PROJECT, USER, DaemonChild, label, wait_until, write_config
from sinagot.daemon._api import MAX_JOBS_LISTED as JOBS_LIMIT
from sinagot.testing import EmulatorServer


def _add(server: EmulatorServer, n: int, version: int = 0) -> None:
    if version == 0:
        server.create_session(PROJECT, label(n))
    data = "".join(f"{i},{n},{version}\n" for i in range(200)).encode()
    name = "raw.csv"
    server.add_scan_file(PROJECT, label(n), scan_type="RS", resource="EEG", name=name, data=data)


def _delete(server: EmulatorServer, n: int) -> None:
    experiment = server.store.find_experiment(PROJECT, label(n))
    assert experiment is not None
    server.store.delete_experiment(experiment)


def _all_done(daemon: DaemonChild, added: int) -> bool:
    # From the status counts: listing every job would itself raise the daemon's RSS.
    (dataset,) = daemon.call("status")["datasets"]
    counts: dict[str, int] = dataset["jobs"]
    unfinished = {state for state, count in counts.items() if count} - {"done", "failed"}
    return sum(counts.values()) >= added and not unfinished


def soak(seconds: float, rate: float, window: int, base: Path) -> None:
    server = EmulatorServer(base / "xnat", users={USER: PASSWORD})
    with server.running_in_thread():
        server.create_project(PROJECT)
        config = write_config(
            base,
            server.url,
            {
                "poll_interval": 0.5,
                "max_concurrent_jobs": 4,
                "state_dir": str(base / "state"),
                "socket": str(base / "d.sock"),
            },
        )
        daemon = DaemonChild(config, base / "d.sock", base / "daemon.log")
        added = 0
        changed = 0
        deleted = 0
        samples: list[tuple[float, int, int]] = []
        warmup = min(30.0, seconds / 4)
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < seconds:
                while added < int(elapsed * rate) + 1:
                    _add(server, added)
                    added += 1
                    # Now and then a recent session gets new data: its job runs again.
                    if added % 7 == 0:
                        changed += 1
                        _add(server, added - 1 - min(added, window or added) // 4, version=changed)
                    if window and added > window:
                        _delete(server, added - 1 - window)
                        deleted += 1
                daemon.call("status")
                daemon.call("metrics")
                if elapsed >= warmup and (not samples or elapsed - samples[-1][0] >= 10):
                    samples.append((elapsed, daemon.rss_kib(), daemon.open_fds()))
                time.sleep(0.25)
            wait_until(lambda: _all_done(daemon, added), 300, "every job done", interval=0.5)
            samples.append((time.monotonic() - start, daemon.rss_kib(), daemon.open_fds()))
            jobs = daemon.call("jobs", limit=JOBS_LIMIT)
        finally:
            code = daemon.stop()
        server.close()

    failed = sum(1 for job in jobs if job["state"] == "failed")
    (_, rss0, fd0), (_, rss1, fd1) = samples[0], samples[-1]
    print(
        f"soak: {seconds:g} s, {added} sessions added, {changed} changed, {deleted} deleted, "
        f"{len(jobs)} jobs ({failed} failed), daemon exit code {code}"
    )
    print(
        f"daemon RSS: {rss0 / 1024:.1f} MiB after warm-up -> {rss1 / 1024:.1f} MiB at end "
        f"(ratio {rss1 / rss0:.2f}x, target ~1.0x)"
    )
    print(f"daemon open fds: {fd0} -> {fd1} (ratio {fd1 / fd0:.2f}x, target 1.0x)")
    middle = samples[len(samples) // 2]
    print(
        f"RSS slope: {_slope(samples[0], middle):.1f} KiB/s in the first half of the samples,"
        f" {_slope(middle, samples[-1]):.1f} KiB/s in the second (flat: both about 0)"
    )
    print(
        "samples (s, RSS MiB, fds): "
        + ", ".join(f"({t:.0f}, {r / 1024:.1f}, {f})" for t, r, f in samples)
    )


def _slope(first: tuple[float, int, int], last: tuple[float, int, int]) -> float:
    """RSS growth between two samples, in KiB per second."""
    return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=2.0, help="new sessions per second")
    parser.add_argument(
        "--window", type=int, default=200, help="sessions kept on the server (0: all)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sinagot-soak-") as tmp:
        soak(args.seconds, args.rate, args.window, Path(tmp))


if __name__ == "__main__":
    main()
