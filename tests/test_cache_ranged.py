"""Big files in parallel byte ranges: every byte once, hashed in order, verified, resumable.

The thresholds are lowered here so that a few MiB take the ranged path.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sinagot.cache import Cache, RemoteFile
from sinagot.cache.internals import download as _download
from sinagot.cache.internals import ranged as _ranged
from sinagot.connectors import AsyncXnatStore, DataRow
from sinagot.errors import ChecksumMismatchError
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER
from test_cache_helpers import (
    KEY,
    CountingSource,
    expected_digests,
    make_files,
    reads,
    tree_digests,
)

MiB = 1 << 20
SLOW_STREAM = _ranged.SLOW_STREAM  # the shipped rule, before the fixture changes it


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_download, "RANGED_MIN", 4 * MiB)
    monkeypatch.setattr(_ranged, "PART", MiB)
    monkeypatch.setattr(_ranged, "PARTS_AT_ONCE", 3)
    # However fast the first part came, the rest comes in ranges.
    monkeypatch.setattr(_ranged, "SLOW_STREAM", float("inf"))


def test_a_big_file_comes_in_ranges_each_byte_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 9 * MiB + 12345, "small.txt": 100})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", checkpoint=2 * MiB)
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    starts = sorted(offset for name, offset in reads(log) if name == "big.bin")
    assert starts == [index * MiB for index in range(10)]  # ten ranges, none twice
    assert [offset for name, offset in reads(log) if name == "small.txt"] == [0]


def test_a_stream_at_the_hash_rate_is_not_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ranged, "SLOW_STREAM", 0.0)
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 9 * MiB + 12345})
    log = tmp_path / "reads.log"
    folder = asyncio.run(Cache(tmp_path / "cache").fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    assert reads(log) == [("big.bin", 0)]


class _Capped(CountingSource):
    """Each stream brings about 50 MiB/s, as behind a proxy that caps connections."""

    async def stream(
        self, file: RemoteFile, offset: int, end: int | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in super().stream(file, offset, end):
            await asyncio.sleep(len(chunk) / (50 * MiB))
            yield chunk


def test_a_capped_stream_is_split_into_ranges_after_its_first_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ranged, "SLOW_STREAM", SLOW_STREAM)
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 6 * MiB})
    log = tmp_path / "reads.log"
    folder = asyncio.run(Cache(tmp_path / "cache").fetch(KEY, files, _Capped(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    assert sorted(offset for _, offset in reads(log)) == [index * MiB for index in range(6)]


def test_a_corrupt_range_fails_the_digest_and_the_file_starts_over(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 6 * MiB})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache")
    # One range's first byte flipped once: caught by the whole-file digest, then fixed.
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log, corrupt=1)))
    assert tree_digests(folder) == expected_digests(files)
    assert len(reads(log)) == 12  # six ranges, twice

    with pytest.raises(ChecksumMismatchError, match=r"big\.bin"):
        asyncio.run(
            Cache(tmp_path / "other").fetch(
                KEY, files, CountingSource(src, tmp_path / "log2", corrupt=100)
            )
        )


class _BreaksOnce(CountingSource):
    """Its range from 5 MiB breaks (after a pause, so that hashing catches up) once."""

    broken = False

    async def stream(
        self, file: RemoteFile, offset: int, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if offset >= 5 * MiB and not self.broken:
            type(self).broken = True
            await asyncio.sleep(0.5)
            raise ConnectionResetError("the server went away")
        async for chunk in super().stream(file, offset, end):
            yield chunk


def test_a_broken_ranged_download_resumes_from_its_hashed_prefix(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 8 * MiB})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", checkpoint=2 * MiB)
    with pytest.raises(ConnectionResetError):
        asyncio.run(cache.fetch(KEY, files, _BreaksOnce(src, log)))
    first = len(reads(log))
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    resumed = sorted(offset for _, offset in reads(log)[first:])
    # Started again at a checkpoint of the hashed prefix (a range's end), not at 0.
    assert resumed[0] >= 2 * MiB and resumed[0] % MiB == 0


def test_a_listed_size_the_ranges_do_not_reach_is_a_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src).mkdir()
    (src / "big.bin").write_bytes(os.urandom(5 * MiB))
    digest = hashlib.md5((src / "big.bin").read_bytes()).hexdigest()
    listed = [RemoteFile("big.bin", 6 * MiB, digest)]  # one MiB more than there is
    with pytest.raises(ChecksumMismatchError):
        asyncio.run(
            Cache(tmp_path / "cache").fetch(KEY, listed, CountingSource(src, tmp_path / "l"))
        )


async def test_ranges_from_the_xnat_emulator(xnat_server: EmulatorServer, tmp_path: Path) -> None:
    data = os.urandom(7 * MiB + 3)
    xnat_server.create_project("RANGE")
    xnat_server.create_session("RANGE", "REC-200101-A")
    xnat_server.add_scan_file(
        "RANGE", "REC-200101-A", scan_type="RS", resource="EEG", name="big.bin", data=data
    )
    store = AsyncXnatStore.connect(
        xnat_server.url,
        project="RANGE",
        user=XNAT_USER,
        password=XNAT_PASSWORD,
        cache=Cache(tmp_path / "cache"),
        local_root=tmp_path / "work",
    )
    try:
        row = DataRow("REC-200101-A")
        await store.populate_row(row)
        folder = await store.download_files(row.entries["RS/EEG"])
    finally:
        await store.aclose()
    assert (folder / "big.bin").read_bytes() == data
