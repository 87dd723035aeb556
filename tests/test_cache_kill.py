"""Real processes killed (SIGKILL) or stopped (SIGSTOP) while they hold an entry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sinagot.cache import Cache, RemoteFile
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

SIZES = {"big.bin": 20 << 20, "mid/part.bin": 3 << 20, "small.txt": 500}


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _assert_nothing_partial_visible(cache: Cache, files: list[RemoteFile]) -> None:
    """Whatever was killed when: the manifest names a complete verified entry, or there is none."""
    home = cache.entry_dir(KEY)
    manifest = cache.manifest(KEY)
    if manifest is not None:
        folder = cache.lookup(KEY, files)
        assert folder is not None
        assert tree_digests(folder) == expected_digests(files)
    # A generation folder only ever appears by renaming a fully verified staging folder.
    for generation in home.glob("g-*"):
        assert tree_digests(generation) == expected_digests(files)


def _resumable(cache: Cache) -> set[str]:
    """Names of partial files whose sidecar recorded a durable prefix."""
    names = set()
    for state in cache.entry_dir(KEY).glob("tmp-*/parts/*.state"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(state.read_text())
            if data.get("offset", 0) > 0 and not data.get("complete"):
                names.add(data["name"])
    return names


def _kill_trials(tmp_path: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    src = tmp_path / "src"
    files = make_files(src, SIZES)
    for trial in range(trials):
        root = tmp_path / f"cache{trial}"
        log = tmp_path / f"reads{trial}.log"
        cache = Cache(root, checkpoint=CHECKPOINT)
        child = subprocess.Popen(
            worker_command(
                root,
                src,
                log,
                files,
                tmp_path / f"r{trial}.json",
                delay=0.004,
                chunk_size=256 << 10,
            ),
            stderr=subprocess.DEVNULL,
        )
        try:
            # Wait until the child really started downloading, then kill it at a random later point.
            _wait_for(lambda log=log: log.exists())  # type: ignore[misc]
            time.sleep(rng.uniform(0.0, 0.8))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        _assert_nothing_partial_visible(cache, files)
        partial = _resumable(cache)
        before = len(reads(log))
        folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
        assert tree_digests(folder) == expected_digests(files)
        again = reads(log)[before:]
        for name in partial:
            assert (name, 0) not in again, f"trial {trial}: {name} restarted from 0"
        # A holder killed just after its commit leaves its staging folder for gc, which removes it.
        cache.gc(max_size=1 << 40)
        assert not list(cache.entry_dir(KEY).glob("tmp-*"))
        _assert_nothing_partial_visible(cache, files)
        assert cache.lookup(KEY, files) is not None


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    _kill_trials(tmp_path, trials=5, seed=1)


@pytest.mark.slow
def test_sigkill_at_random_points_many_trials(tmp_path: Path) -> None:
    _kill_trials(tmp_path, trials=50, seed=2)


def _staged_bytes(home: Path) -> int:
    total = 0
    for part in home.glob("tmp-*/parts/*"):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


def test_stalled_holder_is_taken_over_and_cannot_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 8 << 20, "small.txt": 100})
    log = tmp_path / "reads.log"
    result = tmp_path / "stalled.json"
    cache = Cache(tmp_path / "cache", race_condition_delay=0.5, lock_timeout=60)
    home = cache.entry_dir(KEY)
    child = subprocess.Popen(
        worker_command(
            tmp_path / "cache", src, log, files, result, delay=0.02, chunk_size=128 << 10
        ),
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: _staged_bytes(home) > 0)
        child.send_signal(signal.SIGSTOP)
        [stalled_staging] = home.glob("tmp-*")
        with caplog.at_level("WARNING", logger="sinagot.cache"):
            folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
        assert tree_digests(folder) == expected_digests(files)
        assert any("taking over" in r.getMessage() for r in caplog.records)
        assert stalled_staging.exists(), "the takeover deleted a live holder's files"
        child.send_signal(signal.SIGCONT)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait()
    assert child.returncode == 0, stderr.decode()
    # Awake again, it sees the new holder's commit and uses it instead of finishing its own.
    assert b"committed" in stderr and b"meanwhile: using its files" in stderr
    seen = json.loads(result.read_text())
    assert seen["digests"] == expected_digests(files)
    assert not stalled_staging.exists()
    assert cache.lookup(KEY, files) is not None
    _assert_nothing_partial_visible(cache, files)


def test_slow_but_progressing_holder_is_not_taken_over(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"slow.bin": 1 << 20})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", race_condition_delay=0.3, lock_timeout=60)
    home = cache.entry_dir(KEY)
    # 16 chunks, 0.1 s apart: the whole download lasts far longer than the delay.
    child = subprocess.Popen(
        worker_command(
            tmp_path / "cache",
            src,
            log,
            files,
            tmp_path / "r.json",
            delay=0.1,
            chunk_size=64 << 10,
            race_condition_delay=0.3,
        ),
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _staged_bytes(home) > 0)
        folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()
    assert tree_digests(folder) == expected_digests(files)
    assert reads(log) == [("slow.bin", 0)]


def test_waiter_takes_over_at_once_when_holder_dies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 20 << 20})
    log = tmp_path / "reads.log"
    # A long delay: only the kernel releasing the dead holder's flock lets the waiter in quickly.
    cache = Cache(
        tmp_path / "cache", race_condition_delay=3600, lock_timeout=60, checkpoint=CHECKPOINT
    )
    home = cache.entry_dir(KEY)
    child = subprocess.Popen(
        worker_command(tmp_path / "cache", src, log, files, tmp_path / "r.json", delay=0.01),
        stderr=subprocess.DEVNULL,
    )

    async def race() -> Path:
        await asyncio.to_thread(_wait_for, log.exists)  # the child holds the lock
        waiter = asyncio.create_task(cache.fetch(KEY, files, CountingSource(src, log)))
        await asyncio.to_thread(_wait_for, lambda: any(home.glob("tmp-*/parts/*.state")))
        os.kill(child.pid, signal.SIGKILL)
        return await waiter

    try:
        folder = asyncio.run(race())
    finally:
        child.kill()
        child.wait()
    assert tree_digests(folder) == expected_digests(files)
    (_, first), (_, second) = reads(log)
    assert first == 0 and second >= CHECKPOINT


def test_adopted_small_files_are_rehashed_not_trusted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 20 << 20, "kept.txt": 700, "spoilt.txt": 900})
    log = tmp_path / "reads.log"
    cache = Cache(tmp_path / "cache", checkpoint=CHECKPOINT)
    home = cache.entry_dir(KEY)
    child = subprocess.Popen(
        worker_command(tmp_path / "cache", src, log, files, tmp_path / "r.json", delay=0.02),
        stderr=subprocess.DEVNULL,
    )
    try:
        # Small files finish at once and are not synced one by one; big.bin checkpoints.
        _wait_for(lambda: len(list(home.glob("tmp-*/files/*.txt"))) == 2)
        _wait_for(lambda: any(home.glob("tmp-*/parts/*.state")))
        child.kill()
    finally:
        child.kill()
        child.wait()
    [spoilt] = home.glob("tmp-*/files/spoilt.txt")
    data = bytearray(spoilt.read_bytes())
    data[0] ^= 0xFF  # same size: only hashing can tell
    spoilt.write_bytes(bytes(data))
    before = len(reads(log))
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    again = dict(reads(log)[before:])
    assert set(again) == {"big.bin", "spoilt.txt"}  # kept.txt was verified and kept
    assert again["big.bin"] >= CHECKPOINT
