"""Fetching into the cache: verification, freshness, corruption, resume, disk full (one process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from sinagot.cache import Cache, RemoteFile
from sinagot.errors import CacheFullError, ChecksumMismatchError
from test_cache_helpers import (
    CHECKPOINT,
    KEY,
    CountingSource,
    expected_digests,
    make_files,
    reads,
    tree_digests,
    worker_command,
)

SIZES = {"a/b.nii": 300_000, "c.txt": 1000, "empty": 0}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Cache, Path, Path, list[RemoteFile]]:
    src = tmp_path / "src"
    files = make_files(src, SIZES)
    return Cache(tmp_path / "cache"), src, tmp_path / "reads.log", files


def generations(cache: Cache) -> list[str]:
    home = cache.entry_dir(KEY)
    return sorted(p.name for p in home.iterdir() if p.name.startswith("g-"))


async def test_fetch_returns_exactly_the_verified_files(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    folder = await cache.fetch(KEY, files, CountingSource(src, log), last_modified="t1")
    assert tree_digests(folder) == expected_digests(files)
    assert sorted(n for n, _ in reads(log)) == sorted(SIZES)
    manifest = cache.manifest(KEY)
    assert manifest is not None and manifest.last_modified == "t1"
    assert {f.name: f.md5 for f in manifest.files} == expected_digests(files)
    assert not [p for p in cache.entry_dir(KEY).iterdir() if p.name.startswith("tmp-")]


async def test_many_files_around_the_whole_file_size(tmp_path: Path) -> None:
    # Up to 1 MiB a file arrives whole and goes to the batched writer; above, through a part file.
    sizes = {f"d{i % 7}/f{i:03d}": (i * 7919) % (64 << 10) for i in range(300)}
    sizes |= {"exactly": 1 << 20, "above": (1 << 20) + 1, "empty": 0}
    src = tmp_path / "src"
    files = make_files(src, sizes)
    log = tmp_path / "reads.log"
    # Small chunks: files arrive in pieces, and with a few slots many wait for the writer.
    source = CountingSource(src, log, chunk_size=16 << 10, corrupt=3)
    cache = Cache(tmp_path / "cache", concurrent_files=3)
    folder = await cache.fetch(KEY, files, source)
    assert tree_digests(folder) == expected_digests(files)
    assert len(reads(log)) == len(files) + 3  # the corrupted ones, once more each


async def test_unchanged_entry_is_served_without_reading_or_hashing(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    folder = await cache.fetch(KEY, files, CountingSource(src, log))
    # Same size, same mtime, different bytes: only hashing could notice, and a hit must not hash.
    target = folder / "c.txt"
    st = target.stat()
    target.write_bytes(b"x" * st.st_size)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.lookup(KEY, files) == folder
    assert await cache.fetch(KEY, files, CountingSource(src, log)) == folder
    assert len(reads(log)) == len(SIZES)


async def test_changed_digest_downloads_only_that_file(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    old = await cache.fetch(KEY, files, CountingSource(src, log))
    changed = [f for f in files if f.name != "c.txt"] + make_files(src, {"c.txt": 11}, seed=9)
    assert cache.lookup(KEY, changed) is None
    first = len(reads(log))
    folder = await cache.fetch(KEY, changed, CountingSource(src, log))
    assert [n for n, _ in reads(log)[first:]] == ["c.txt"]
    assert tree_digests(folder) == expected_digests(changed)
    assert folder != old and generations(cache) == [folder.name]  # unused old generation pruned


async def test_removed_file_leaves_the_new_generation(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    await cache.fetch(KEY, files, CountingSource(src, log))
    fewer = [f for f in files if f.name != "a/b.nii"]
    folder = await cache.fetch(KEY, fewer, CountingSource(src, log))
    assert tree_digests(folder) == expected_digests(fewer)
    assert not (folder / "a").exists()
    assert len(reads(log)) == len(SIZES)


async def test_new_last_modified_refreshes_manifest_without_download(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    await cache.fetch(KEY, files, CountingSource(src, log), last_modified="t1")
    assert cache.lookup(KEY, files, last_modified="t2") is None
    folder = await cache.fetch(KEY, files, CountingSource(src, log), last_modified="t2")
    assert len(reads(log)) == len(SIZES)
    assert cache.lookup(KEY, files, last_modified="t2") == folder


async def test_old_generation_survives_while_in_use(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    async with cache.using(KEY):
        old = await cache.fetch(KEY, files, CountingSource(src, log))
        changed = [f for f in files if f.name != "c.txt"] + make_files(src, {"c.txt": 5}, seed=3)
        new = await cache.fetch(KEY, changed, CountingSource(src, log))
        assert old.exists() and new.exists() and old != new
        assert tree_digests(old) == expected_digests(files)


async def test_corrupt_bytes_are_retried_once(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    folder = await cache.fetch(KEY, files, CountingSource(src, log, corrupt=1))
    assert tree_digests(folder) == expected_digests(files)
    assert len(reads(log)) == len(files) + 1


async def test_persistent_corruption_raises_and_is_never_visible(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    only = [f for f in files if f.name == "a/b.nii"]
    with pytest.raises(ChecksumMismatchError) as info:
        await cache.fetch(KEY, only, CountingSource(src, log, corrupt=2))
    message = str(info.value)
    assert "a/b.nii" in message and only[0].digest in message
    assert "\n" not in message
    assert len(reads(log)) == 2
    assert cache.lookup(KEY, only) is None
    assert cache.manifest(KEY) is None
    assert generations(cache) == []
    for staging in cache.entry_dir(KEY).glob("tmp-*"):
        assert not list((staging / "files").rglob("*"))
        assert not list((staging / "parts").glob("*.part"))


async def test_too_long_stream_is_a_mismatch(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    lying = [RemoteFile("c.txt", 10, files[1].digest)]
    with pytest.raises(ChecksumMismatchError, match="more than the announced 10 bytes"):
        await cache.fetch(KEY, lying, CountingSource(src, log))
    assert cache.manifest(KEY) is None


async def test_tasks_and_threads_of_one_process_download_once(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup

    def in_thread() -> Path:
        return asyncio.run(cache.fetch(KEY, files, CountingSource(src, log, delay=0.01)))

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(cache.fetch(KEY, files, CountingSource(src, log, delay=0.01)))
            for _ in range(4)
        ]
        threads = [group.create_task(asyncio.to_thread(in_thread)) for _ in range(2)]
    folders = {t.result() for t in [*tasks, *threads]}
    assert len(folders) == 1
    assert sorted(n for n, _ in reads(log)) == sorted(SIZES)


def test_verify_quarantines_a_file_corrupted_on_disk(
    setup: tuple[Cache, Path, Path, list[RemoteFile]],
) -> None:
    cache, src, log, files = setup
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    target = folder / "a" / "b.nii"
    st = target.stat()
    with target.open("r+b") as handle:
        handle.seek(1234)
        handle.write(b"\x00\x01\x02")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = cache.verify()
    assert report.checked_files == len(SIZES)
    [problem] = report.problems
    assert problem.file == "a/b.nii" and problem.expected == files[0].digest
    assert problem.actual != problem.expected
    assert problem.quarantined is not None and problem.quarantined.exists()
    assert not target.exists()
    assert cache.lookup(KEY, files) is None
    before = len(reads(log))
    again = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert [n for n, _ in reads(log)[before:]] == ["a/b.nii"]
    assert tree_digests(again) == expected_digests(files)
    assert cache.verify().problems == ()


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _staged_bytes(home: Path) -> int:
    total = 0
    for part in home.glob("tmp-*/parts/*.part"):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


def _kill_worker_at_first_checkpoint(
    tmp_path: Path, src: Path, log: Path, files: list[RemoteFile], home: Path
) -> None:
    """Start a downloading process and SIGKILL it once it has recorded a resume checkpoint."""
    child = subprocess.Popen(
        worker_command(tmp_path / "cache", src, log, files, tmp_path / "r.json", delay=0.01),
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: any(home.glob("tmp-*/parts/*.state")))
        child.kill()
    finally:
        child.kill()
        child.wait()


def test_partial_file_of_a_killed_holder_is_resumed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 48 << 20})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", checkpoint=CHECKPOINT)
    home = cache.entry_dir(KEY)
    _kill_worker_at_first_checkpoint(tmp_path, src, log, files, home)
    assert cache.lookup(KEY, files) is None
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    (first, _), (second, offset) = reads(log)
    assert first == second == "big.bin" and offset >= CHECKPOINT


def test_resume_refuses_an_altered_prefix(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 40 << 20})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", checkpoint=CHECKPOINT)
    home = cache.entry_dir(KEY)
    _kill_worker_at_first_checkpoint(tmp_path, src, log, files, home)
    [part] = home.glob("tmp-*/parts/*.part")
    with part.open("r+b") as handle:
        handle.write(b"garbage")
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    assert reads(log)[-1] == ("big.bin", 0)


async def test_disk_full_raises_and_leaves_no_partial_entry(tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"a.bin": 1 << 20, "b.bin": 6 << 20})
    cache = Cache(tiny_fs / "cache")
    with pytest.raises(CacheFullError, match="no space left") as info:
        await cache.fetch(KEY, files, CountingSource(src, tmp_path / "log"))
    assert "\n" not in str(info.value)
    home = cache.entry_dir(KEY)
    assert cache.manifest(KEY) is None
    assert not list(home.glob("tmp-*")) and not list(home.glob("g-*"))
    # The space is free again: a smaller entry fits.
    small = make_files(src, {"c.bin": 1 << 20}, seed=5)
    folder = await cache.fetch(KEY, small, CountingSource(src, tmp_path / "log"))
    assert tree_digests(folder) == expected_digests(small)


async def test_cancelled_fetch_releases_everything_and_is_resumed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 24 << 20})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", lock_timeout=30, checkpoint=CHECKPOINT)
    home = cache.entry_dir(KEY)
    task = asyncio.create_task(cache.fetch(KEY, files, CountingSource(src, log, delay=0.01)))
    for _ in range(3000):  # bounded wait for the first checkpoint
        if any(home.glob("tmp-*/parts/*.state")):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Nothing stays locked by this process: the same process resumes at once.
    folder = await cache.fetch(KEY, files, CountingSource(src, log))
    assert tree_digests(folder) == expected_digests(files)
    assert reads(log)[-1][1] >= CHECKPOINT
