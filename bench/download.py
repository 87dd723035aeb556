"""Download throughput of XnatStore against the XNAT emulator, with two baselines.

Two sessions on an emulator running in its own process: one 1 GiB file, and
2,000 files of 50 KiB. Each is downloaded by

  (a) XnatStore.download_files into its verified cache (hash while streaming,
      fsync, atomic publish), ``concurrent_files`` at a time over as many
      connections;
  (b) xnatpy, file after file (what a script using the client would do);
  (c) the raw limit: plain aiohttp streaming + MD5 + write with the same
      concurrency and connections, no cache, no fsync.

Targets: (a) >= 0.8 x (c) throughput, and (a) >= 3 x faster than (b) on the
many-file session. Also prints the peak RSS growth of (a) on the 1 GiB file
(target < 50 MiB). Listings are done before the clocks start, and one untimed
raw pass warms the server (page cache, its memory of small files) for all
three. Each figure is the median of ``--rounds`` runs, interleaved, since
the machine may be shared.

Run: python bench/download.py [--small]   (--small: 256 MiB and 500 files, for a quick look)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil

from sinagot.connectors import DataRow, RetryPolicy, XnatStore
from sinagot.testing import EmulatorServer

PROJECT = "BENCH"
USER, PASSWORD = "alice", "secret"
CONCURRENCY = 8
ROUNDS = 3
MiB = 1 << 20


def seed(data_dir: Path, big_size: int, many: int, scratch: Path) -> None:
    server = EmulatorServer(data_dir, users={USER: PASSWORD})
    try:
        server.create_project(PROJECT)
        big = scratch / "big.bin"
        block = os.urandom(MiB)
        with big.open("wb") as out:
            for index in range(big_size // MiB):
                out.write(index.to_bytes(8, "little") + block[8:])
        server.create_session(PROJECT, "BIG")
        server.add_scan_file(
            PROJECT, "BIG", scan_type="T", resource="DATA", name="big.bin", data=big
        )
        big.unlink()
        server.create_session(PROJECT, "MANY")
        for index in range(many):
            data = index.to_bytes(8, "little") + block[: 50 * 1024 - 8]
            server.add_scan_file(
                PROJECT, "MANY", scan_type="T", resource="DATA", name=f"f{index:05d}.bin", data=data
            )
    finally:
        server.close()


def start_emulator(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from sinagot.cli import main; raise SystemExit(main())",
            "--log-level",
            "WARNING",
            "emulator",
            "--data",
            str(data_dir),
            "--user",
            f"{USER}:{PASSWORD}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        process.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return process, line.removeprefix("listening on ")


class PeakRss:
    """Samples this process's RSS in a thread while the block runs."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = 0

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MiB


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def via_store(url: str, session: str, root: Path, concurrency: int) -> tuple[float, float]:
    store = XnatStore(
        url,
        root / "cache",
        user=USER,
        password=PASSWORD,
        project=PROJECT,
        local_root=root / "work",
        concurrent_files=concurrency,
        max_connections=concurrency,
        retry=RetryPolicy(attempts=2),
    )
    with store:
        row = DataRow(session)
        store.populate_row(row)
        entry = row.entries["T/DATA"]
        with PeakRss() as rss:
            seconds = timed(lambda: store.download_files(entry, store.cache_dir))
    return seconds, rss.growth_mib


def via_xnatpy(url: str, session: str, target: Path) -> float:
    import xnat

    target.mkdir()
    with xnat.connect(url, user=USER, password=PASSWORD, loglevel="ERROR") as connection:
        files = list(
            connection.projects[PROJECT]
            .experiments[session]
            .scans["1"]
            .resources["DATA"]
            .files.values()
        )

        def download_all() -> None:
            for file in files:
                file.download(str(target / file.path), verbose=False)

        return timed(download_all)


async def raw_limit(url: str, session: str, target: Path, concurrency: int) -> float:
    await asyncio.to_thread(target.mkdir)
    base = f"{url}/data/projects/{PROJECT}/experiments/{session}/scans/1/resources/DATA/files"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), read_bufsize=MiB
    ) as http:
        pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        auth = f"Basic {pair}"
        async with http.get(f"{url}/data/JSESSION", headers={"Authorization": auth}) as answer:
            cookie = {"Cookie": f"JSESSIONID={(await answer.text()).strip()}"}
        async with http.get(base, params={"format": "json"}, headers=cookie) as answer:
            rows = (await answer.json(content_type=None))["ResultSet"]["Result"]
        slots = asyncio.Semaphore(concurrency)

        async def one(row: dict[str, str]) -> None:
            async with slots, http.get(f"{base}/{row['Name']}", headers=cookie) as answer:
                digest = hashlib.md5(usedforsecurity=False)
                with (target / row["Name"]).open("wb") as out:
                    async for chunk in answer.content.iter_chunked(MiB):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != row["digest"]:
                    raise SystemExit(f"raw download of {row['Name']} is corrupt")

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for row in rows:
                group.create_task(one(row))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256 MiB and 500 files")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="files at once")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs per figure (median)")
    args = parser.parse_args()
    big_size, many = (256 * MiB, 500) if args.small else (1024 * MiB, 2000)
    with tempfile.TemporaryDirectory(prefix="sinagot-bench-") as scratch_name:
        scratch = Path(scratch_name)
        print(f"seeding: 1 x {big_size // MiB} MiB and {many} x 50 KiB files ...", flush=True)
        seed(scratch / "xnat", big_size, many, scratch)
        process, url = start_emulator(scratch / "xnat")
        try:
            print(
                f"{'session':<10}{'(a) store':>12}{'(b) xnatpy':>12}{'(c) raw':>10}"
                f"{'(a)/(c)':>10}{'(b)/(a)':>10}{'RSS +MiB':>10}"
            )
            for session, size in (("BIG", big_size), ("MANY", many * 50 * 1024)):
                run = scratch / session
                run.mkdir()
                asyncio.run(raw_limit(url, session, run / "warm", args.concurrency))
                shutil.rmtree(run / "warm")
                stores, raws, xnatpys, peaks = [], [], [], []
                for _ in range(args.rounds):
                    seconds, rss = via_store(url, session, run / "a", args.concurrency)
                    stores.append(seconds)
                    peaks.append(rss)
                    shutil.rmtree(run / "a")
                    raws.append(asyncio.run(raw_limit(url, session, run / "c", args.concurrency)))
                    shutil.rmtree(run / "c")
                    xnatpys.append(via_xnatpy(url, session, run / "b"))
                    shutil.rmtree(run / "b")
                store_s, raw_s = statistics.median(stores), statistics.median(raws)
                xnatpy_s, rss = statistics.median(xnatpys), max(peaks)
                print(
                    f"{session:<10}{store_s:>11.2f}s{xnatpy_s:>11.2f}s{raw_s:>9.2f}s"
                    f"{raw_s / store_s:>10.2f}{xnatpy_s / store_s:>10.2f}{rss:>10.1f}"
                    f"   ({size / MiB / store_s:.0f} MiB/s via the store)",
                    flush=True,
                )
        finally:
            process.terminate()
            process.wait(30)
    print("(a)/(c): throughput of the store relative to the raw limit (target >= 0.8)")
    print("(b)/(a): how many times faster than xnatpy (target >= 3 on MANY)")


if __name__ == "__main__":
    main()
