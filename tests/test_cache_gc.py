"""Eviction, cleanup of dead downloads, and the ``sinagot cache`` commands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinagot.cache import Cache, EntryKey, LocalFileSource, RemoteFile
from sinagot.cli.internals import parse_size
from test_cache_helpers import (
    KEY,
    CountingSource,
    expected_digests,
    holder_command,
    make_files,
    reads,
    tree_digests,
    user_loop_command,
    worker_command,
)


def _key(i: int) -> EntryKey:
    return EntryKey(KEY.server, KEY.project, f"REC-00000{i}-A", "scans/1/resources/EEG")


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def _fill(cache: Cache, src: Path, count: int) -> list[RemoteFile]:
    files = make_files(src, {"data.bin": 100_000})
    for i in range(count):
        asyncio.run(cache.fetch(_key(i), files, LocalFileSource(src)))
    return files


def test_gc_never_evicts_entries_in_use_or_being_downloaded(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    src = tmp_path / "src"
    cache = Cache(tmp_path / "cache")
    _fill(cache, src, 3)  # keys 0, 1, 2
    ready = tmp_path / "ready"
    children.append(subprocess.Popen(holder_command(cache.root, _key(1), ready)))
    _wait_for(ready.exists)
    # KEY (session REC-000001-A... distinct from _key(i)) is being downloaded by a stopped process.
    big = make_files(tmp_path / "bigsrc", {"big.bin": 4 << 20})
    downloader = subprocess.Popen(
        worker_command(
            cache.root, tmp_path / "bigsrc", tmp_path / "log", big, tmp_path / "r.json", delay=0.05
        ),
        stderr=subprocess.DEVNULL,
    )
    children.append(downloader)
    _wait_for(lambda: any(cache.entry_dir(KEY).glob("tmp-*")))
    downloader.send_signal(signal.SIGSTOP)

    report = cache.gc(max_size=0)
    evicted = {e.session for e in report.evicted}
    busy = {e.session for e in report.busy}
    assert evicted == {_key(0).session, _key(2).session}
    assert busy == {_key(1).session, KEY.session}
    assert cache.entry_dir(_key(1)).exists() and cache.manifest(_key(1)) is not None
    assert list(cache.entry_dir(KEY).glob("tmp-*")), "a live download's files were removed"
    assert not cache.entry_dir(_key(0)).exists()

    # Once the holders are gone, everything goes, including the dead download's staging folder.
    for proc in children:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = cache.gc(max_size=0)
    assert report.removed_temporary >= 1
    assert {e.session for e in report.evicted} == {_key(1).session, KEY.session}
    assert report.size_after == 0
    assert cache.entries() == []


def test_gc_evicts_least_recently_used_first(tmp_path: Path) -> None:
    src = tmp_path / "src"
    cache = Cache(tmp_path / "cache")
    files = _fill(cache, src, 3)
    old = time.time() - 1000
    for i in range(3):
        manifest = cache.entry_dir(_key(i)) / "manifest.json"
        os.utime(manifest, (old + i, old + i))
    assert cache.lookup(_key(0), files) is not None  # a hit makes key 0 the most recent
    one = cache.entries()[0].size
    report = cache.gc(max_size=one)
    assert [e.session for e in report.evicted] == [_key(1).session, _key(2).session]
    assert [e.session for e in cache.entries()] == [_key(0).session]


def test_gc_under_concurrent_use(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"a.bin": 200_000, "b/c.bin": 50_000})
    cache = Cache(tmp_path / "cache")
    for _ in range(3):
        children.append(subprocess.Popen(user_loop_command(cache.root, src, files, rounds=40)))
    # Eviction between two uses is allowed; during a use the user would see files vanish and fail.
    for _ in range(200):  # bounded; the users finish long before
        cache.gc(max_size=0)
        if all(p.poll() is not None for p in children):
            break
        time.sleep(0.005)
    assert [p.wait(timeout=60) for p in children] == [0, 0, 0]
    folder = asyncio.run(cache.fetch(KEY, files, LocalFileSource(src)))
    assert tree_digests(folder) == expected_digests(files)


def test_gc_removes_a_dead_download_and_keeps_committed_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src, {"big.bin": 20 << 20})
    log = tmp_path / "log"
    cache = Cache(tmp_path / "cache")
    child = subprocess.Popen(
        worker_command(cache.root, src, log, files, tmp_path / "r.json", delay=0.01),
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: any(cache.entry_dir(KEY).glob("tmp-*/parts/*.part")))
    finally:
        child.kill()
        child.wait()
    report = cache.gc(max_size=1 << 40)
    assert report.removed_temporary == 1 and report.evicted == ()
    assert not list(cache.entry_dir(KEY).glob("tmp-*"))
    folder = asyncio.run(cache.fetch(KEY, files, CountingSource(src, log)))
    assert tree_digests(folder) == expected_digests(files)
    assert reads(log)[-1] == ("big.bin", 0)


@pytest.mark.parametrize(
    ("text", "size"),
    [("500M", 500 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("123", 123), ("4kb", 4096)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def _sinagot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("sinagot")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_ls_verify_gc(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "scripts" / "EEG").mkdir(parents=True)
    (tmp_path / "scripts" / "EEG" / "preprocess.py").write_text("")
    config = tmp_path / "sinagot.toml"
    config.write_text(
        '[path]\ndataset = "data"\nscripts = "scripts"\n[records]\nid_pattern = "REC-.*"\n'
        '[tasks.RS]\nmodalities = ["EEG"]\n[modalities.EEG]\nscripts = ["preprocess"]\n'
        '[store]\ncache_dir = "cache"\n'
    )
    cache = Cache(tmp_path / "cache")
    files = _fill(cache, tmp_path / "src", 2)

    listing = _sinagot("cache", "ls", str(config))
    assert listing.returncode == 0, listing.stderr
    assert "2 entries" in listing.stdout and _key(0).session in listing.stdout

    clean = _sinagot("cache", "verify", str(config))
    assert clean.returncode == 0 and "0 corrupt" in clean.stdout
    folder = cache.lookup(_key(1), files)
    assert folder is not None
    (folder / "data.bin").write_bytes(b"broken")
    broken = _sinagot("cache", "verify", str(config))
    assert broken.returncode == 1
    assert "CORRUPT" in broken.stdout and files[0].digest in broken.stdout

    bad = _sinagot("cache", "gc", str(config), "--max-size", "lots")
    assert bad.returncode == 2 and "not understood" in bad.stderr
    gc = _sinagot("cache", "gc", str(config), "--max-size", "0")
    assert gc.returncode == 0, gc.stderr
    assert "evicted 2 entries" in gc.stdout
    assert cache.entries() == []


def test_cli_needs_only_the_store_table(tmp_path: Path) -> None:
    # A machine that only keeps the cache (e.g. a shared cache host) has no scripts or modalities.
    config = tmp_path / "cache.toml"
    config.write_text('[store]\ncache_dir = "cache"\n')
    _fill(Cache(tmp_path / "cache"), tmp_path / "src", 1)

    listing = _sinagot("cache", "ls", str(config))
    assert listing.returncode == 0, listing.stderr
    assert "1 entries" in listing.stdout
    verify = _sinagot("cache", "verify", str(config))
    assert verify.returncode == 0 and "0 corrupt" in verify.stdout, verify.stderr
    gc = _sinagot("cache", "gc", str(config), "--max-size", "0")
    assert gc.returncode == 0 and "evicted 1 entries" in gc.stdout, gc.stderr


def test_cli_reports_a_bad_store_table_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text('[store]\ncache_dir = "cache"\nconcurrent_file = 2\n')
    listing = _sinagot("cache", "ls", str(config))
    assert listing.returncode == 2
    assert listing.stderr.strip().splitlines() == [
        f"sinagot: error: {config}: store.concurrent_file: unknown key; did you mean 'concurrent_files'?"
    ]
