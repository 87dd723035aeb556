"""Verified downloads into the cache, against the limits measured in the same run.

Large file (one 1 GiB file, emulator in its own process, fast profile):
  (a) XnatStore.download_files into the verified cache (hash while streaming,
      fsync, atomic publish);
  (m) one core's MD5 rate on an in-memory buffer: a verified download cannot be
      faster; (d) the disk's sequential write rate with fdatasync, for the cache's
      file system: a durable download cannot be faster either;
  (b) xnatpy's unverified single-file download (no hash, no fsync);
  (c) plain aiohttp streaming + MD5 + write (no cache, no fsync).
  Targets: (a) >= 0.8 x min(m, d), and (a) >= (b).

Many small files (2,000 x 50 KiB, emulator in its production profile: per-request
latency, first-byte delays, archive build time, bandwidth caps; see README):
  (a) XnatStore (it fetches such an entry as one zip archive and verifies each file);
  (b1) xnatpy file by file; (b2) xnatpy download_dir (one zip, no verification).
  Targets: (a) >= 5 x (b1) and >= 1.5 x (b2).

Medians of --rounds interleaved runs (the machine may be shared); the last line is
one JSON object with every figure.

Run: python bench/download.py [--small]   (--small: 256 MiB and 500 files;
--big-mib N --files K for a smoke run of any size)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from _xnat_bench import PASSWORD, PROJECT, USER, open_store, start_emulator, stop, timed
from sinagot.connectors import DataRow
from sinagot.testing import EmulatorServer

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


def md5_rate(total: int) -> float:
    """One core's MD5 throughput in bytes/s (best of three)."""
    buffer = os.urandom(min(total, 64 * MiB))
    count = max(1, total // len(buffer))

    def hash_all() -> None:
        digest = hashlib.md5(usedforsecurity=False)
        for _ in range(count):
            digest.update(buffer)

    return max(count * len(buffer) / timed(hash_all) for _ in range(3))


def disk_rate(folder: Path, total: int) -> float:
    """Sequential writes with fdatasync on ``folder``'s file system, in bytes/s."""
    path = folder / "disk-rate.bin"
    block = os.urandom(min(total, 4 * MiB))
    count = max(1, total // len(block))

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(count):
                os.write(fd, block)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    try:
        return count * len(block) / timed(write)
    finally:
        path.unlink(missing_ok=True)


def via_store(url: str, session: str, root: Path, concurrency: int) -> tuple[float, float]:
    with open_store(url, root, concurrency) as store:
        row = DataRow(session)
        store.populate_row(row)
        entry = row.entries["T/DATA"]
        with PeakRss() as rss:
            seconds = timed(lambda: store.download_files(entry, store.cache_dir))
    return seconds, rss.growth_mib


def _xnatpy_resource(url: str, session: str) -> Any:
    import xnat

    connection = xnat.connect(url, user=USER, password=PASSWORD, loglevel="ERROR")
    resource = connection.projects[PROJECT].experiments[session].scans["1"].resources["DATA"]
    return connection, resource


def via_xnatpy_files(url: str, session: str, target: Path) -> float:
    target.mkdir()
    connection, resource = _xnatpy_resource(url, session)
    with connection:
        files = list(resource.files.values())

        def download_all() -> None:
            for file in files:
                file.download(str(target / file.path), verbose=False)

        return timed(download_all)


def via_xnatpy_dir(url: str, session: str, target: Path) -> float:
    target.mkdir()
    connection, resource = _xnatpy_resource(url, session)
    with connection:
        return timed(lambda: resource.download_dir(str(target), verbose=False))


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


def large(url: str, scratch: Path, size: int, rounds: int, concurrency: int) -> dict[str, Any]:
    run = scratch / "BIG"
    run.mkdir()
    asyncio.run(raw_limit(url, "BIG", run / "warm", concurrency))
    shutil.rmtree(run / "warm")
    stores, raws, xnatpys, peaks, md5s, disks = [], [], [], [], [], []
    for _ in range(rounds):
        md5s.append(md5_rate(min(size, 512 * MiB)))
        disks.append(disk_rate(run, min(size, 512 * MiB)))
        seconds, rss = via_store(url, "BIG", run / "a", concurrency)
        stores.append(size / seconds)
        peaks.append(rss)
        shutil.rmtree(run / "a")
        raws.append(size / asyncio.run(raw_limit(url, "BIG", run / "c", concurrency)))
        shutil.rmtree(run / "c")
        xnatpys.append(size / via_xnatpy_files(url, "BIG", run / "b"))
        shutil.rmtree(run / "b")
    store, md5, disk = statistics.median(stores), statistics.median(md5s), statistics.median(disks)
    xnatpy, raw = statistics.median(xnatpys), statistics.median(raws)
    limit = min(md5, disk)
    print(
        f"1 x {size // MiB} MiB   store {store / MiB:.0f} MiB/s   MD5 {md5 / MiB:.0f}   "
        f"disk+fdatasync {disk / MiB:.0f}   xnatpy {xnatpy / MiB:.0f}   raw {raw / MiB:.0f}"
    )
    print(
        f"  store / min(MD5, disk) = {store / limit:.2f} (target >= 0.8)   "
        f"store / MD5 = {store / md5:.2f}   store / xnatpy = {store / xnatpy:.2f} (target >= 1)"
        f"   RSS +{max(peaks):.1f} MiB"
    )
    return {
        "large_mib": size // MiB,
        "store_mib_s": round(store / MiB, 1),
        "md5_mib_s": round(md5 / MiB, 1),
        "disk_sync_mib_s": round(disk / MiB, 1),
        "xnatpy_mib_s": round(xnatpy / MiB, 1),
        "raw_mib_s": round(raw / MiB, 1),
        "store_over_limit": round(store / limit, 3),
        "store_over_md5": round(store / md5, 3),
        "store_over_xnatpy": round(store / xnatpy, 3),
        "rss_growth_mib": round(max(peaks), 1),
    }


def many(url: str, scratch: Path, count: int, rounds: int, concurrency: int) -> dict[str, Any]:
    run = scratch / "MANY"
    run.mkdir()
    stores, dirs, files = [], [], []
    for index in range(rounds):
        stores.append(via_store(url, "MANY", run / "a", concurrency)[0])
        shutil.rmtree(run / "a")
        dirs.append(via_xnatpy_dir(url, "MANY", run / "d"))
        shutil.rmtree(run / "d")
        if index == 0:  # minutes under the production profile: once is enough
            files.append(via_xnatpy_files(url, "MANY", run / "b"))
            shutil.rmtree(run / "b")
    store, by_dir, by_file = (statistics.median(x) for x in (stores, dirs, files))
    print(
        f"{count} x 50 KiB (production profile)   store {store:.2f} s   "
        f"xnatpy download_dir {by_dir:.2f} s   xnatpy file by file {by_file:.2f} s"
    )
    print(
        f"  xnatpy files / store = {by_file / store:.1f} (target >= 5)   "
        f"xnatpy download_dir / store = {by_dir / store:.2f} (target >= 1.5)"
    )
    return {
        "many_files": count,
        "many_store_s": round(store, 3),
        "many_xnatpy_dir_s": round(by_dir, 3),
        "many_xnatpy_files_s": round(by_file, 3),
        "files_over_store": round(by_file / store, 2),
        "dir_over_store": round(by_dir / store, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256 MiB and 500 files")
    parser.add_argument("--big-mib", type=int, help="size of the big file, MiB (a smoke run)")
    parser.add_argument("--files", type=int, help="number of 50 KiB files (a smoke run)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="files at once")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs per figure (median)")
    args = parser.parse_args()
    big_size, count = (256 * MiB, 500) if args.small else (1024 * MiB, 2000)
    big_size = big_size if args.big_mib is None else args.big_mib * MiB
    count = count if args.files is None else args.files
    figures: dict[str, Any] = {"rounds": args.rounds, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="sinagot-bench-") as scratch_name:
        scratch = Path(scratch_name)
        print(f"seeding: 1 x {big_size // MiB} MiB and {count} x 50 KiB files ...", flush=True)
        seed(scratch / "xnat", big_size, count, scratch)
        for profile, measure in (("fast", large), ("production", many)):
            process, url = start_emulator(scratch / "xnat", profile)
            try:
                size = big_size if measure is large else count
                figures.update(measure(url, scratch, size, args.rounds, args.concurrency))
            finally:
                stop(process)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
