"""Cost of asking the cache for 10,000 entries it already holds, unchanged.

Target: < 1 s wall for the 10,000 hits, and no file content read (only the
small manifests). The baseline is a bare ``os.stat`` of the same files, the
least any freshness check must do.

The entries are made by one real ``fetch``, then replicated (manifest copied,
files hard-linked: same size and mtime, so each copy is a valid entry) to keep
the set-up to seconds; a hit costs the same however its entry was made.

Run: python bench/cache_hit.py [--entries N]; the last line printed is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sinagot.cache import Cache, EntryKey, LocalFileSource, RemoteFile

ENTRIES = 10_000
FILE_SIZE = 4096


class NoReads:
    """A source that fails the benchmark if the cache ever asks it for bytes."""

    supports_range = False

    def stream(self, file: RemoteFile, offset: int, end: int | None = None) -> AsyncIterator[bytes]:
        raise AssertionError(f"a cache hit read {file.name} from the source")


def read_chars() -> int:
    """Bytes this process has read through read()-like calls (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def key(i: int) -> EntryKey:
    return EntryKey("http://127.0.0.1:8080", "BENCH", f"REC-{i:06d}-A", "scans/1/resources/EEG")


def populate(cache: Cache, src: Path, entries: int) -> list[RemoteFile]:
    data = os.urandom(FILE_SIZE)
    (src / "eeg").mkdir(parents=True)
    (src / "eeg" / "data.bin").write_bytes(data)
    files = [RemoteFile("eeg/data.bin", FILE_SIZE, hashlib.md5(data).hexdigest())]
    first = asyncio.run(cache.fetch(key(0), files, LocalFileSource(src)))
    home = cache.entry_dir(key(0))
    for i in range(1, entries):
        other = cache.entry_dir(key(i))
        other.mkdir(parents=True)
        shutil.copytree(first, other / first.name, copy_function=os.link)
        shutil.copy2(home / "manifest.json", other / "manifest.json")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=ENTRIES)
    entries = parser.parse_args().entries
    with tempfile.TemporaryDirectory(prefix="sinagot-bench-") as tmp:
        cache = Cache(Path(tmp) / "cache")
        t0 = time.perf_counter()
        files = populate(cache, Path(tmp) / "src", entries)
        print(f"set-up: {entries} entries in {time.perf_counter() - t0:.1f} s")
        paths = [
            p / "eeg" / "data.bin"
            for p in (cache.lookup(key(i), files) for i in range(entries))
            if p
        ]
        assert len(paths) == entries

        t0 = time.perf_counter()
        for path in paths:
            os.stat(path)
        stat_time = time.perf_counter() - t0

        before = read_chars()
        t0 = time.perf_counter()
        hits = sum(cache.lookup(key(i), files) is not None for i in range(entries))
        lookup_time = time.perf_counter() - t0
        lookup_read = read_chars() - before
        assert hits == entries

        async def fetch_all() -> int:
            source = NoReads()
            done = 0
            for i in range(entries):
                await cache.fetch(key(i), files, source)
                done += 1
            return done

        before = read_chars()
        t0 = time.perf_counter()
        fetched = asyncio.run(fetch_all())
        fetch_time = time.perf_counter() - t0
        fetch_read = read_chars() - before
        assert fetched == entries

        manifest_bytes = entries * (cache.entry_dir(key(0)) / "manifest.json").stat().st_size
        content_bytes = entries * FILE_SIZE
        print(f"baseline os.stat of the {entries} files: {stat_time:.3f} s")
        print(
            f"lookup() x {entries}: {lookup_time:.3f} s ({lookup_time / stat_time:.1f}x the stat loop); "
            f"read {lookup_read} bytes = {lookup_read / manifest_bytes:.2f}x the manifests, "
            f"{lookup_read / content_bytes:.2f}x the file contents"
        )
        print(
            f"await fetch() x {entries} (hits, source never read): {fetch_time:.3f} s "
            f"({fetch_time / stat_time:.1f}x the stat loop); read {fetch_read} bytes = "
            f"{fetch_read / manifest_bytes:.2f}x the manifests"
        )
        verdict = "met" if fetch_time < 1.0 and lookup_time < 1.0 else "MISSED"
        print(f"target < 1 s wall for {entries} hits, no content read: {verdict}")
        figures = {
            "entries": entries,
            "stat_s": round(stat_time, 4),
            "lookup_s": round(lookup_time, 4),
            "fetch_s": round(fetch_time, 4),
            "lookup_ratio_to_stat": round(lookup_time / stat_time, 2),
            "fetch_ratio_to_stat": round(fetch_time / stat_time, 2),
            "lookup_read_bytes": lookup_read,
            "fetch_read_bytes": fetch_read,
            "manifest_bytes": manifest_bytes,
            "content_bytes": content_bytes,
            "target_met": verdict == "met",
        }
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
