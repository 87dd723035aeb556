"""Bounded soak: sessions keep arriving on the server; the daemon's RSS and open fds plateau.

Run: ``python bench/daemon_soak.py [--seconds 600] [--rate 2] [--window 200]
[--tracemalloc]``. The real daemon (``sinagot daemon``, XNAT backend, Dask
LocalCluster of threads; under ``bench/_probe.py``, which measures it from inside)
follows a project on the emulator (a thread of this process) while new sessions are
added at ``rate`` per second and some recent ones change. The project keeps its
newest ``window`` sessions (older ones are deleted from the server, as a lab
archiving its recordings would), so what the daemon must hold for the project itself
stays the same size and any growth comes from the jobs; ``--window 0`` keeps every
session instead.

RSS and open fds are sampled every 10 s (a tenth of a shorter run) after a warm-up.
Targets: RSS growth over the last third of the arrivals < 1 MiB (a least-squares fit
of its samples), fds flat.
The probe prints the sizes of the daemon's bounded structures (the XNAT store's
session index, the last listing, Dask's histories, SQLite's memory, the largest
object counts) after warm-up, at each third and at the end, so one sees that each
has filled up and stays there; ``--tracemalloc`` adds the allocation sites that grew.
Status and metrics are read over the control socket throughout, as a monitoring
system would. The last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import PASSWORD, PROJECT, USER, DaemonChild, label, wait_until, write_config
from sinagot.daemon.internals import MAX_JOBS_LISTED as JOBS_LIMIT
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


def _probe(daemon: DaemonChild, elapsed: float) -> dict[str, Any]:
    document = daemon.probe()
    document["elapsed"] = elapsed
    return document


def soak(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    seconds, rate, window = args.seconds, args.rate, args.window
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
        daemon = DaemonChild(
            config,
            base / "d.sock",
            base / "daemon.log",
            probe=base / "probe.json",
            env={"SINAGOT_PROBE_TRACEMALLOC": "1"} if args.tracemalloc else None,
        )
        added = 0
        changed = 0
        deleted = 0
        samples: list[tuple[float, int, int]] = []
        probes: list[dict[str, Any]] = []
        parts: list[dict[str, int]] = []
        warmup = min(60.0, seconds / 6)
        every = min(10.0, seconds / 10)
        # The probe (gc of the whole heap, inside the daemon) after warm-up, at each third,
        # and at the end; not at the RSS samples' moments.
        probe_at = sorted([warmup + 5, seconds / 3, 2 * seconds / 3])
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
                if elapsed >= warmup and (not samples or elapsed - samples[-1][0] >= every):
                    samples.append((elapsed, daemon.rss_kib(), daemon.open_fds()))
                    parts.append(daemon.rss_parts_kib())
                if probe_at and elapsed >= probe_at[0]:
                    probe_at.pop(0)
                    probes.append(_probe(daemon, elapsed))
                time.sleep(0.25)
            samples.append((time.monotonic() - start, daemon.rss_kib(), daemon.open_fds()))
            wait_until(lambda: _all_done(daemon, added), 300, "every job done", interval=0.5)
            drained = time.monotonic() - start
            samples.append((drained, daemon.rss_kib(), daemon.open_fds()))
            probes.append(_probe(daemon, drained))
            jobs = daemon.call("jobs", limit=JOBS_LIMIT)
            journal_bytes = sum(
                f.stat().st_size for f in (base / "state").glob("journal.sqlite3*") if f.is_file()
            )
        finally:
            code = daemon.stop()
        server.close()

    failed = sum(1 for job in jobs if job["state"] == "failed")
    (_, rss0, fd0), (_, rss1, fd1) = samples[0], samples[-1]
    # The last third of the arrivals (the drain after them is not part of it).
    arriving = [s for s in samples[:-1] if s[0] <= seconds + 1]
    third = [s for s in arriving if s[0] >= 2 * seconds / 3]
    growth = _slope_fit(third) * (third[-1][0] - third[0][0]) if len(third) > 1 else 0.0
    raw_growth = third[-1][1] - third[0][1] if len(third) > 1 else 0
    fds_third = [s[2] for s in third]
    # The same growth by kind of RSS (samples taken during the arrivals only).
    first_third = next(i for i, s in enumerate(samples) if s[0] >= 2 * seconds / 3)
    last_arrival = min(len(parts), len(arriving)) - 1
    by_kind = (
        {kind: parts[last_arrival][kind] - parts[first_third][kind] for kind in parts[first_third]}
        if first_third < last_arrival
        else {}
    )
    fds_before = [s[2] for s in arriving if s[0] < 2 * seconds / 3]
    # Jobs in flight hold connections and files (a sample can catch a few more): fds are
    # flat when the last third's median is the earlier samples' and the drained daemon
    # holds no more than after warm-up.
    fds_flat = (
        statistics.median(fds_third) <= statistics.median(fds_before or [fd0]) + 1
        and fd1 <= fd0 + 1
    )
    print(
        f"soak: {seconds:g} s at {rate:g} sessions/s, window {window}: {added} sessions added, "
        f"{changed} changed, {deleted} deleted, {len(jobs)} jobs ({failed} failed), "
        f"drained {drained - seconds:.0f} s after the last arrival, daemon exit code {code}"
    )
    print(
        f"daemon RSS: {rss0 / 1024:.1f} MiB after warm-up -> {rss1 / 1024:.1f} MiB at end "
        f"(ratio {rss1 / rss0:.2f}x, target ~1.0x)"
    )
    print(
        f"RSS over the last third ({third[0][0]:.0f}-{third[-1][0]:.0f} s, {len(third)} samples):"
        f" {growth / 1024:+.2f} MiB by a least-squares fit, {raw_growth / 1024:+.2f} MiB first to"
        f" last (target < 1 MiB -> {'OK' if growth < 1024 else 'MISSED'})"
    )
    print(
        "  by kind, first to last: "
        + ", ".join(f"{kind} {kib / 1024:+.2f} MiB" for kind, kib in by_kind.items())
    )
    print(
        f"daemon open fds: {fd0} after warm-up -> {fd1} drained (ratio {fd1 / fd0:.2f}x); "
        f"{min(fds_before, default=fd0)}..{max(fds_before, default=fd0)} before the last third,"
        f" {min(fds_third)}..{max(fds_third)} in it (target: flat -> {'OK' if fds_flat else 'MISSED'})"
    )
    middle = samples[len(samples) // 2]
    print(
        f"RSS slope: {_slope(samples[0], middle):.1f} KiB/s in the first half of the samples,"
        f" {_slope(middle, samples[-1]):.1f} KiB/s in the second (flat: both about 0)"
    )
    print(
        "samples (s, RSS MiB, fds): "
        + ", ".join(f"({t:.0f}, {r / 1024:.1f}, {f})" for t, r, f in samples)
    )
    growing = _show_probes(probes)
    print(
        f"journal on disk: {journal_bytes / 1024:.0f} KiB (SQLite caches at most 2,000 KiB of it"
        " per connection: its memory grows with the file up to that)"
    )
    last = probes[-1]
    return {
        "bench": "daemon_soak",
        "seconds": seconds,
        "rate": rate,
        "window": window,
        "sessions": added,
        "jobs": len(jobs),
        "failed": failed,
        "rss_warm_mib": round(rss0 / 1024, 1),
        "rss_end_mib": round(rss1 / 1024, 1),
        "rss_last_third_mib": round(growth / 1024, 2),
        "rss_last_third_by_kind_mib": {k: round(v / 1024, 2) for k, v in by_kind.items()},
        "fds_warm": fd0,
        "fds_end": fd1,
        "fds_last_third": [min(fds_third), max(fds_third)],
        "bounded": {k: last.get(k) for k in _STRUCTURES if k not in ("dask_scheduler",)},
        "still_growing": growing,
        "sqlite_bytes": last.get("sqlite", {}).get("used_bytes"),
        "journal_bytes": journal_bytes,
        "gc_objects": [p.get("gc_objects") for p in probes],
        "ok": growth < 1024 and fds_flat,
    }


_STRUCTURES = (
    "xnat_session_index",
    "served_datasets",
    "dask_scheduler",
    "dask_spans",
    "dask_workers",
    "dask_key_split_memo",
)


def _flat(document: dict[str, Any]) -> dict[str, float]:
    """The probe's sizes as ``name[.index].attribute -> number``."""
    flat: dict[str, float] = {}
    for key in _STRUCTURES:
        value = document.get(key)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            name = key if len(items) == 1 else f"{key}[{index}]"
            if isinstance(item, dict):
                flat.update((f"{name}.{k}", v) for k, v in item.items() if v is not None)
            elif isinstance(item, int | float):
                flat[name] = item
    for k, v in document.get("sqlite", {}).items():
        flat[f"sqlite.{k}"] = v
    for k, v in document.get("malloc", {}).items():
        flat[f"malloc.{k}"] = v
    flat["gc_objects"] = document.get("gc_objects", 0)
    return flat


def _show_probes(probes: list[dict[str, Any]]) -> list[str]:
    """Print each measured size at every probe; return those still growing at the end."""
    for document in probes:
        if "error" in document:
            print(f"probe at {document['elapsed']:.0f} s failed: {document['error']}")
    good = [d for d in probes if "error" not in d]
    if not good:
        return []
    print(
        "probe (inside the daemon) at "
        + ", ".join(f"{d['elapsed']:.0f} s" for d in good)
        + f"; each took {max(d['probe_seconds'] for d in good):.2f} s at most:"
    )
    flats = [_flat(d) for d in good]
    growing = []
    for name in sorted({k for f in flats for k in f}):
        values = [f.get(name, 0) for f in flats]
        if not any(values):
            continue
        still = len(values) > 2 and values[-1] > values[-2] > values[-3]
        if still:
            growing.append(name)
        shown = " -> ".join(f"{v:g}" for v in values)
        print(f"  {name}: {shown}{'  (still growing)' if still else ''}")
    print(
        "  most objects at the end: " + ", ".join(f"{n} {c}" for n, c in good[-1]["top_types"][:12])
    )
    for grown in good[-1].get("grown", [])[:10]:
        print(
            f"  grown since the first probe {grown['size_diff'] / 1024:+.0f} KiB "
            f"({grown['count_diff']:+d} blocks) at " + " <- ".join(grown["where"][:4])
        )
    return growing


def _slope_fit(samples: list[tuple[float, int, int]]) -> float:
    """Least-squares RSS slope over ``samples``, in KiB per second."""
    n = len(samples)
    mean_t = sum(s[0] for s in samples) / n
    mean_r = sum(s[1] for s in samples) / n
    var = sum((s[0] - mean_t) ** 2 for s in samples)
    return sum((s[0] - mean_t) * (s[1] - mean_r) for s in samples) / var if var else 0.0


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
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace allocations in the daemon and print the sites that grew (slows it down)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sinagot-soak-") as tmp:
        figures = soak(args, Path(tmp))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
