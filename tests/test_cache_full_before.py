"""A cache disk already full when a download starts (found by bench/chaos.py, seed 3).

The staging folder is created (a folder costs no data block on tmpfs) but the lock's
holder record, the first bytes written, no longer fits: each attempt used to leave its
staging folder behind, still flocked by a descriptor nobody closed, so that no later
fetch (nor ``gc``) could ever take it for a dead holder's and remove it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinagot.cache import Cache
from sinagot.errors import CacheFullError
from test_cache_helpers import KEY, CountingSource, expected_digests, make_files, tree_digests


def _fill(folder: Path) -> Path:
    """A ballast file taking every free byte of the file system holding ``folder``."""
    ballast = folder / "ballast"
    room = os.statvfs(folder)
    fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, room.f_bavail * room.f_frsize)
    finally:
        os.close(fd)
    return ballast


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_a_full_disk_before_the_download_leaves_no_staging_and_no_descriptor(
    tmp_path: Path, tiny_fs: Path
) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"a.bin": 64 << 10})
    cache = Cache(tiny_fs / "cache")
    home = cache.entry_dir(KEY)
    home.mkdir(parents=True)
    ballast = _fill(tiny_fs)
    before = _open_fds()
    for _ in range(3):  # as a daemon's job retries
        with pytest.raises(CacheFullError, match="no space left") as info:
            await cache.fetch(KEY, files, CountingSource(src, tmp_path / "log"))
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(("tmp-", ".new-"))) == []
    assert _open_fds() == before
    ballast.unlink()
    folder = await cache.fetch(KEY, files, CountingSource(src, tmp_path / "log"))
    assert tree_digests(folder) == expected_digests(files)
    assert not [p for p in home.iterdir() if p.name.startswith(("tmp-", ".new-"))]
