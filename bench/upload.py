"""Upload throughput of XnatStore.put_fileset against the XNAT emulator, with baselines.

The emulator runs in its own process. Two cases, one 1 GiB file and 2,000 files
of 50 KiB, each uploaded into a fresh resource of one session by

  (a) XnatStore.put_fileset into a derivative entry, everything it does
      included (un-commit, the listing before, the verification listing after),
      with the MD5s the step would have given it (FileSet.checksums);
  (b) the raw limit: plain aiohttp PUTs of the same files, ``--concurrency``
      at a time over as many connections, nothing listed or verified;
  (c) xnatpy's ``upload_dir`` (a tar.gz sent with extract=true, unpacked by the
      server), and for the big file also xnatpy's single-file ``upload``.

Targets: (a) >= 0.8 x (b) throughput on both cases, and (a) >= 2 x (c) on the
many-file case. The many-file case runs again under the ``production`` profile
(per-request latency, bandwidth per connection and per server), where
concurrency decides. An untimed upload warms the server up for each case, then
the rounds are interleaved (the order rotates) and each figure is the median,
since the machine may be shared; every resource is checked and deleted again
after its run, untimed. Also prints the peak RSS growth of (a): a 1 GiB file must
not be read into memory. The last line is one JSON object of all the figures.
About 15 minutes, most of it xnatpy compressing 1 GiB at gzip's level 9.

Run: python bench/upload.py [--small] [--rounds N] [--cases big,many,many-production]
(--small: 256 MiB and 500 files, for a quick look; --big-mib N --files K for a smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import signal
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from _xnat_bench import PASSWORD, PROJECT, USER, open_store, start_emulator, stop, timed
from sinagot.connectors import DataRow, FileSet
from sinagot.testing import EmulatorServer

SESSION = "UP"
CONCURRENCY = 8
ROUNDS = 5
SMALL_SIZE = 50 * 1024
MiB = 1 << 20
# Generous for 2 shared cores: xnatpy gzips a 1 GiB file at level 9 in each round.
BUDGET_SECONDS = 3600

FILES = f"/data/projects/{PROJECT}/experiments/{SESSION}/resources"


@dataclass
class Case:
    """One set of files to upload, and the figures measured for it."""

    root: Path
    names: tuple[str, ...]
    size: int
    checksums: dict[str, str]
    methods: tuple[str, ...]
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: list[float] = field(default_factory=list)


def make_files(scratch: Path, big_size: int, many: int) -> tuple[Path, Path]:
    """A 1-file folder and a many-file folder of incompressible bytes (as xnatpy finds them)."""
    big, small = scratch / "big", scratch / "many"
    big.mkdir()
    small.mkdir()
    block = os.urandom(MiB)
    with (big / "big.bin").open("wb") as out:
        for index in range(big_size // MiB):
            out.write(index.to_bytes(8, "little") + block[8:])
    for index in range(many):
        start = (index * 4099) % (MiB - SMALL_SIZE)
        data = index.to_bytes(8, "little") + block[start + 8 : start + SMALL_SIZE]
        (small / f"f{index:05d}.bin").write_bytes(data)
    return big, small


def md5s(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    digests = {}
    for name in names:
        digest = hashlib.md5(usedforsecurity=False)
        with (root / name).open("rb") as source:
            while chunk := source.read(4 * MiB):
                digest.update(chunk)
        digests[name] = digest.hexdigest()
    return digests


def seed(data_dir: Path) -> None:
    server = EmulatorServer(data_dir, users={USER: PASSWORD})
    try:
        server.create_project(PROJECT)
        server.create_session(PROJECT, SESSION)
    finally:
        server.close()


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Bounded time: the whole run raises TimeoutError past ``seconds`` (cleanup still runs)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the benchmark ran past its {seconds} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def rss_kib(field_name: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


class Runner:
    """Runs each method once into a fresh resource, and removes it again afterwards."""

    def __init__(self, url: str, scratch: Path, concurrency: int) -> None:
        import xnat

        self.url = url
        self.concurrency = concurrency
        self.xnat = xnat.connect(url, user=USER, password=PASSWORD, loglevel="ERROR")
        self.store = open_store(url, scratch, concurrency)
        self.store.list_sessions()  # logs in: the clocks start with a session open
        self._labels = 0

    def close(self) -> None:
        self.store.close()
        self.xnat.disconnect()

    def set_profile(self, profile: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/_emulator/profile", data=json.dumps(profile).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def run(self, method: str, case: Case) -> float:
        self._labels += 1
        label = f"b{self._labels}"
        os.sync()  # the server's writeback of the last run must not land on this one
        if method == "store":
            seconds, resource = self._store(case, label)
        else:
            resource = label
            seconds = getattr(self, f"_{method}")(case, label)
        self._check_and_delete(resource, case)
        return seconds

    def _store(self, case: Case, label: str) -> tuple[float, str]:
        row = DataRow(SESSION)
        entry = self.store.create_fileset_entry(f"{label}@bench", row)
        fileset = FileSet(case.root, case.names, case.checksums)
        before = rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # restarts VmHWM from the current RSS
        seconds = timed(lambda: self.store.put_fileset(fileset, entry))
        case.rss_mib.append((rss_kib("VmHWM") - before) / 1024)
        return seconds, entry.uri.rsplit("/", 1)[1]

    def _raw(self, case: Case, label: str) -> float:
        return asyncio.run(self._raw_puts(case, label))

    async def _raw_puts(self, case: Case, label: str) -> float:
        base = f"{self.url}{FILES}/{label}/files"
        params = {"overwrite": "true", "inbody": "true"}
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            login = {"Authorization": f"Basic {pair}"}
            async with http.get(f"{self.url}/data/JSESSION", headers=login) as answer:
                cookie = {"Cookie": f"JSESSIONID={(await answer.text()).strip()}"}
            slots = asyncio.Semaphore(self.concurrency)

            async def put(name: str) -> None:
                async with slots:
                    with (case.root / name).open("rb") as body:
                        async with http.put(
                            f"{base}/{name}", params=params, data=body, headers=cookie
                        ) as answer:
                            answer.raise_for_status()

            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for name in case.names:
                    group.create_task(put(name))
            return time.perf_counter() - started

    def _xnatpy_dir(self, case: Case, label: str) -> float:
        resource = self._xnatpy_resource(label)
        # upload_dir always draws a progress bar on stderr.
        with contextlib.redirect_stderr(io.StringIO()):
            return timed(lambda: resource.upload_dir(case.root, overwrite=True))

    def _xnatpy_file(self, case: Case, label: str) -> float:
        resource = self._xnatpy_resource(label)

        def upload_each() -> None:
            for name in case.names:
                resource.upload(case.root / name, name, overwrite=True)

        return timed(upload_each)

    def _xnatpy_resource(self, label: str) -> Any:
        experiment = self.xnat.projects[PROJECT].experiments[SESSION]
        return self.xnat.classes.ResourceCatalog(parent=experiment, label=label, format="BIN")

    def _check_and_delete(self, resource: str, case: Case) -> None:
        rows = self.xnat.get_json(f"{FILES}/{resource}/files")["ResultSet"]["Result"]
        stored = sum(int(row["Size"]) for row in rows)
        if len(rows) != len(case.names) or stored != case.size:
            raise SystemExit(f"{resource}: {len(rows)} files, {stored} bytes: an upload is lost")
        self.xnat.delete(f"{FILES}/{resource}")


def measure(runner: Runner, case: Case, rounds: int) -> None:
    runner.run("raw", case)  # untimed: the first upload of a run warms the server up
    for index in range(rounds):
        # Rotated so that no method always follows the same one (page cache, writeback).
        shift = index % len(case.methods)
        for method in case.methods[shift:] + case.methods[:shift]:
            case.seconds.setdefault(method, []).append(runner.run(method, case))


def figures(case: Case) -> dict[str, Any]:
    median = {method: statistics.median(values) for method, values in case.seconds.items()}
    store = median["store"]
    result: dict[str, Any] = {
        "files": len(case.names),
        "bytes": case.size,
        "seconds": {method: round(value, 3) for method, value in median.items()},
        "MBps": {method: round(case.size / value / 1e6, 1) for method, value in median.items()},
        "all_seconds": {m: [round(v, 3) for v in values] for m, values in case.seconds.items()},
        "store_vs_raw": round(median["raw"] / store, 3),
        "store_vs_xnatpy_dir": round(median["xnatpy_dir"] / store, 3),
    }
    if "xnatpy_file" in median:
        result["store_vs_xnatpy_file"] = round(median["xnatpy_file"] / store, 3)
    if case.rss_mib:
        result["rss_growth_mib"] = round(max(case.rss_mib), 1)
    return result


def print_row(name: str, row: dict[str, Any]) -> None:
    seconds = row["seconds"]
    single = f"{seconds['xnatpy_file']:>9.2f}s" if "xnatpy_file" in seconds else f"{'-':>10}"
    rss = f"{row['rss_growth_mib']:>9.1f}" if "rss_growth_mib" in row else f"{'-':>9}"
    print(
        f"{name:<17}{seconds['store']:>9.2f}s{seconds['raw']:>9.2f}s{seconds['xnatpy_dir']:>9.2f}s"
        f"{single}{row['store_vs_raw']:>9.2f}{row['store_vs_xnatpy_dir']:>9.2f}{rss}"
        f"   ({row['MBps']['store']:.0f} MB/s via the store)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256 MiB and 500 files")
    parser.add_argument("--big-mib", type=int, help="size of the big file, MiB (a smoke run)")
    parser.add_argument("--files", type=int, help="number of 50 KiB files (a smoke run)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="files at once")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs per figure (median)")
    parser.add_argument(
        "--cases",
        default="big,many,many-production",
        help="comma-separated subset of big, many, many-production",
    )
    args = parser.parse_args()
    wanted = args.cases.split(",")
    big_size, many = (256 * MiB, 500) if args.small else (1024 * MiB, 2000)
    big_size = big_size if args.big_mib is None else args.big_mib * MiB
    many = many if args.files is None else args.files
    results: dict[str, dict[str, Any]] = {}
    with deadline(BUDGET_SECONDS), tempfile.TemporaryDirectory(prefix="sinagot-bench-") as name:
        scratch = Path(name)
        print(f"writing 1 x {big_size // MiB} MiB and {many} x 50 KiB files ...", flush=True)
        big_root, many_root = make_files(scratch, big_size, many)
        big_names = ("big.bin",)
        many_names = tuple(sorted(p.name for p in many_root.iterdir()))
        cases = {
            "big": (big_root, big_names, ("store", "raw", "xnatpy_dir", "xnatpy_file"), "fast"),
            "many": (many_root, many_names, ("store", "raw", "xnatpy_dir"), "fast"),
            "many-production": (
                many_root,
                many_names,
                ("store", "raw", "xnatpy_dir"),
                "production",
            ),
        }
        seed(scratch / "xnat")
        process, url = start_emulator(scratch / "xnat")
        runner = None
        try:
            runner = Runner(url, scratch, args.concurrency)
            print(
                f"{'case':<17}{'(a) store':>10}{'(b) raw':>10}{'(c) dir':>10}{'(c) file':>10}"
                f"{'(a)/(b)':>9}{'(c)/(a)':>9}{'RSS +MiB':>9}"
            )
            for case_name in wanted:
                root, names, methods, profile = cases[case_name]
                size = sum((root / n).stat().st_size for n in names)
                case = Case(root, names, size, md5s(root, names), methods)
                runner.set_profile(profile)
                measure(runner, case, args.rounds)
                results[case_name] = {"profile": profile, **figures(case)}
                print_row(case_name, results[case_name])
        finally:
            if runner is not None:
                runner.close()
            stop(process)
    print("(a)/(b): store throughput relative to raw aiohttp PUTs (target >= 0.8)")
    print("(c)/(a): how many times faster than xnatpy's upload_dir (target >= 2 on many files)")
    summary = {
        "bench": "upload",
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "big_bytes": big_size,
        "many_files": many,
        "many_file_bytes": SMALL_SIZE,
        "cases": results,
        "targets_met": {
            name: row["store_vs_raw"] >= 0.8
            and (not name.startswith("many") or row["store_vs_xnatpy_dir"] >= 2.0)
            for name, row in results.items()
        },
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
