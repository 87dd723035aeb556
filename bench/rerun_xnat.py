"""Unchanged rerun over XNAT: 1,000 sessions x 3 scripts, < 2 s, one listing, no download.

Run: ``python bench/rerun_xnat.py [--sessions 1000] [--repeats 5]``

An emulator project (``sinagot emulator``, a child process) holds ``sessions``
sessions of one small file each; a dataset config follows it with 3 chained
scripts. The first run (computes and uploads everything) is not the measure. Then:

- **unchanged rerun**: ``Dataset(config).run()`` again in the same work tree, timed
  ``repeats`` times (median), with the emulator's requests per route. The ledger
  (``derivatives/.uptodate.json``) should leave it one project listing (plus the
  login and logout) and no file download, provenance included. Timed on the ``fast``
  profile and again on ``production`` (a loaded XNAT's latency per request);
- **fresh work tree**: the same config with another, empty work folder on the same
  cache: no ledger, so every session is checked (its requests are counted). Inputs
  come from the cache (the first run downloaded them), and so do the derivatives
  Sinagot itself uploaded, outputs and provenance (the first run entered them in the
  cache once the server listed their digests): no file may be downloaded.

Baseline, measured in the same run: the listing alone (``XnatStore.list_sessions``
with its login and logout), the floor of any rerun. Targets: unchanged rerun < 2 s,
1 listing request per project, 0 file downloads; fresh work tree: 0 file downloads.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import PASSWORD, PROJECT, USER, EmulatorChild, file_downloads, seed_project
from rerun_unchanged import SCRIPT
from sinagot import Dataset
from sinagot.connectors import XnatStore
from sinagot.testing import EmulatorServer

LISTING = "GET /data/projects/{project}/experiments"
SCAN_FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}/resources/{resource}"
    "/files/{path}"
)
# Derivatives' files and provenance documents alike.
DERIVED_FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/resources/{resource}/files/{path}"
)

INPUTS = {
    "copy": '("{id}", "{task}", "clinical", "answers.json")',
    "count": '("{id}", "derivatives", "{task}", "copy.txt")',
    "summary": '("{id}", "derivatives", "{task}", "count.txt")',
}


def label(n: int) -> str:
    return f"REC-{200000 + n:06d}-A"


def _answers(server: EmulatorServer, session: str) -> None:
    score = int(session[4:10]) % 10
    answers = f'{{"record": "{session}", "score": {score}}}\n'.encode() + b"x" * 512
    server.add_scan_file(
        PROJECT, session, scan_type="RS", resource="clinical", name="answers.json", data=answers
    )


def _config(base: Path, url: str, work: str) -> Path:
    for name, path_in in INPUTS.items():
        script = base / "scripts" / "clinical" / f"{name}.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(SCRIPT.format(path_in=path_in, name=name))
    config = base / f"{work}.toml"
    config.write_text(
        "\n".join(
            [
                "[path]",
                f'dataset = "{work}"',
                'scripts = "scripts"',
                "[records]",
                'id_pattern = "REC-\\\\d{6}-[A-Z]"',
                "[tasks.RS]",
                'modalities = ["clinical"]',
                "[modalities.clinical]",
                'scripts = ["copy", "count", "summary"]',
                "[store]",
                'type = "xnat"',
                f'server = "{url}"',
                f'project = "{PROJECT}"',
                f'user = "{USER}"',
                f'password = "{PASSWORD}"',
                'cache_dir = "cache"',
                "[log]",
                'level = "WARNING"',
            ]
        )
        + "\n"
    )
    return config


def _timed_run(
    emulator: EmulatorChild, config: Path, steps: int
) -> tuple[float, dict[str, int], int]:
    """One ``Dataset(config).run()``: seconds, requests per route, steps up to date."""
    emulator.reset_counters()
    start = time.perf_counter()
    report = Dataset(config).run()
    seconds = time.perf_counter() - start
    assert report.failed == 0 and report.ran + report.skipped == steps, str(report)
    return seconds, emulator.request_counts(), report.skipped


def _listing_alone(url: str, cache: Path) -> float:
    start = time.perf_counter()
    with XnatStore(url, cache, user=USER, password=PASSWORD, project=PROJECT) as store:
        store.list_sessions()
    return time.perf_counter() - start


def _show(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} x {route}" for route, n in sorted(counts.items(), key=lambda i: -i[1]))


@dataclass(frozen=True)
class Rerun:
    """Unchanged reruns on one emulator profile: medians and worst cases."""

    seconds: float
    max_seconds: float
    listing_seconds: float
    requests: int
    listings: int
    downloads: int
    routes: Mapping[str, int]


def bench(sessions: int, repeats: int, base: Path) -> dict[str, object]:
    steps = 3 * sessions
    start = time.perf_counter()
    seed_project(base / "xnat", map(label, range(sessions)), _answers)
    seed_seconds = time.perf_counter() - start
    emulator = EmulatorChild(base / "xnat")
    try:
        work = _config(base, emulator.url, "work")
        first_seconds, first_counts, _ = _timed_run(emulator, work, steps)

        figures: dict[str, Rerun] = {}
        for profile in ("fast", "production"):
            emulator.set_profile(profile)
            listing = statistics.median(
                _listing_alone(emulator.url, base / "cache-baseline") for _ in range(repeats)
            )
            runs = [_timed_run(emulator, work, steps) for _ in range(repeats)]
            seconds = statistics.median(r[0] for r in runs)
            counts = runs[-1][1]
            assert all(r[2] == steps for r in runs), "an unchanged rerun ran a step"
            figures[profile] = Rerun(
                seconds=seconds,
                max_seconds=max(r[0] for r in runs),
                listing_seconds=listing,
                requests=max(sum(r[1].values()) for r in runs),
                listings=max(r[1].get(LISTING, 0) for r in runs),
                downloads=max(file_downloads(r[1]) for r in runs),
                routes=counts,
            )

        emulator.set_profile("fast")
        fresh = _config(base, emulator.url, "fresh")
        fresh_seconds, fresh_counts, fresh_skipped = _timed_run(emulator, fresh, steps)
        again_seconds, again_counts, _ = _timed_run(emulator, fresh, steps)
    finally:
        emulator.stop()

    fast, production = figures["fast"], figures["production"]
    print(f"sessions: {sessions}, steps: {steps} (3 scripts), repeats: {repeats} (medians)")
    print(f"seeding the emulator: {seed_seconds:.1f} s")
    print(
        f"first run (not the measure): {first_seconds:.1f} s, "
        f"{sum(first_counts.values())} requests, {file_downloads(first_counts)} file downloads"
    )
    for name, row in figures.items():
        print(
            f"unchanged rerun [{name} profile]: {row.seconds:.3f} s median "
            f"(max {row.max_seconds:.3f} s), {row.requests} requests "
            f"({row.listings} listing), {row.downloads} file downloads"
        )
        print(f"  routes: {_show(row.routes)}")
        print(
            f"  baseline (login + listing + logout alone): {row.listing_seconds:.3f} s; "
            f"ratio rerun / listing: {row.seconds / row.listing_seconds:.1f}x"
        )
    print(
        f"fresh work tree, same cache [fast]: {fresh_seconds:.1f} s, {fresh_skipped} of {steps} "
        f"steps up to date, {sum(fresh_counts.values())} requests, "
        f"{file_downloads(fresh_counts)} file downloads "
        f"({fresh_counts.get(SCAN_FILE_GET, 0)} of scan files, "
        f"{fresh_counts.get(DERIVED_FILE_GET, 0)} of derivatives and provenance: inputs come"
        " from the cache the first run's downloads filled, derivatives from what its uploads"
        " entered)"
    )
    print(f"  routes: {_show(fresh_counts)}")
    print(
        f"  then unchanged again in that tree: {again_seconds:.3f} s, "
        f"{sum(again_counts.values())} requests, {file_downloads(again_counts)} file downloads"
    )
    ok = (
        fast.seconds < 2
        and fast.listings == 1
        and fast.downloads == 0
        and file_downloads(fresh_counts) == 0
    )
    print(
        "target: unchanged rerun < 2 s, 1 listing, 0 downloads; fresh tree 0 file "
        f"downloads -> {'OK' if ok else 'MISSED'}"
    )
    return {
        "bench": "rerun_xnat",
        "sessions": sessions,
        "steps": steps,
        "first_run_s": round(first_seconds, 2),
        "rerun_s": round(fast.seconds, 3),
        "rerun_max_s": round(fast.max_seconds, 3),
        "rerun_requests": fast.requests,
        "rerun_listings": fast.listings,
        "rerun_downloads": fast.downloads,
        "listing_alone_s": round(fast.listing_seconds, 3),
        "rerun_production_s": round(production.seconds, 3),
        "rerun_production_requests": production.requests,
        "rerun_production_downloads": production.downloads,
        "listing_alone_production_s": round(production.listing_seconds, 3),
        "fresh_tree_s": round(fresh_seconds, 2),
        "fresh_tree_requests": sum(fresh_counts.values()),
        "fresh_tree_downloads": file_downloads(fresh_counts),
        "fresh_tree_scan_downloads": fresh_counts.get(SCAN_FILE_GET, 0),
        "fresh_tree_derivative_downloads": fresh_counts.get(DERIVED_FILE_GET, 0),
        "fresh_tree_then_unchanged_s": round(again_seconds, 3),
        "ok": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sinagot-rerun-") as tmp:
        figures = bench(args.sessions, args.repeats, Path(tmp))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
