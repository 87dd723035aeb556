"""Files a server lists without a digest (XNAT with checksums off): sizes and a change marker.

Such a file is downloaded, its size checked and its MD5 computed while it streams
and recorded; it is served from the cache again only for the same change marker
(``last_modified``), which the caller moves forward when it knows the files did not
change (``restamp``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from sinagot.cache import Cache, RemoteFile
from sinagot.errors import ChecksumMismatchError
from test_cache_helpers import (
    KEY,
    CountingSource,
    expected_digests,
    make_files,
    reads,
    tree_digests,
)

SIZES = {"eeg/raw.bin": 3 << 20, "notes.txt": 500}


def _without_digests(files: list[RemoteFile]) -> list[RemoteFile]:
    return [dataclasses.replace(f, digest="") for f in files]


def test_files_without_digests_are_versioned_by_the_change_marker(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, SIZES)
    listed = _without_digests(files)
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache")

    def fetch(stamp: str | None) -> Path:
        return asyncio.run(cache.fetch(KEY, listed, CountingSource(src, log), last_modified=stamp))

    folder = fetch("S1")
    assert tree_digests(folder) == expected_digests(files)
    manifest = cache.manifest(KEY)
    assert manifest is not None
    # The MD5 computed while streaming is what the cache records.
    assert {f.name: f.md5 for f in manifest.files} == expected_digests(files)
    assert len(reads(log)) == len(SIZES)

    # Same marker: served from the cache, nothing read.
    assert fetch("S1") == folder
    assert len(reads(log)) == len(SIZES)
    # Without a marker, a file without digest is never trusted; with another one, refetched.
    assert cache.lookup(KEY, listed) is None
    assert cache.lookup(KEY, listed, last_modified="S2") is None
    fetch("S2")
    assert len(reads(log)) == 2 * len(SIZES)

    # The caller knows the files did not change between S2 and S3 (its own uploads
    # moved the marker): restamped, they are not downloaded again.
    assert cache.restamp(KEY, "S2", "S3")
    assert not cache.restamp(KEY, "S2", "S4")  # not at S2 any more
    assert cache.lookup(KEY, listed, last_modified="S3") is not None
    fetch("S3")
    assert len(reads(log)) == 2 * len(SIZES)


def test_a_file_without_digest_of_another_size_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, SIZES)
    shorter = [dataclasses.replace(f, digest="", size=f.size + 10) for f in files]
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ChecksumMismatchError, match="the server lists no digest"):
        asyncio.run(
            cache.fetch(KEY, shorter, CountingSource(src, tmp_path / "log"), last_modified="S1")
        )
    assert cache.manifest(KEY) is None  # nothing committed


def test_a_malformed_digest_is_still_refused() -> None:
    from sinagot.errors import ServerError

    with pytest.raises(ServerError, match="not an MD5 hex string"):
        RemoteFile("a.txt", 3, "xyz")
