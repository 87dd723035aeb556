"""Many processes asking for one entry at once: exactly one download, identical verified content."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from test_cache_helpers import expected_digests, make_files, mp_fetch, reads

PROCESSES = 8


def _race(tmp_path: Path, sizes: dict[str, int]) -> None:
    src = tmp_path / "src"
    files = make_files(src, sizes)
    log = tmp_path / "reads.log"
    listing = [(f.name, f.size, f.digest) for f in files]
    # spawn: children must not inherit the parent's descriptors (and flocks) through fork.
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        pending = [
            pool.apply_async(mp_fetch, (str(tmp_path / "cache"), str(src), str(log), listing))
            for _ in range(PROCESSES)
        ]
        results = [p.get(timeout=240) for p in pending]
    assert all(r == expected_digests(files) for r in results)
    # One download: every stream opened once (a big file's ranges each start elsewhere).
    opened = reads(log)
    assert len(opened) == len(set(opened))
    assert {name for name, _ in opened} == set(sizes)
    assert sum(1 for _, offset in opened if offset == 0) == len(sizes)


def test_eight_processes_download_an_8mib_entry_once(tmp_path: Path) -> None:
    _race(tmp_path, {"eeg/data.bin": 6 << 20, "eeg/header.json": 2 << 20, "notes.txt": 100})


@pytest.mark.slow
def test_eight_processes_download_a_200mib_entry_once(tmp_path: Path) -> None:
    _race(tmp_path, {"eeg/data.bin": 190 << 20, "eeg/header.json": 10 << 20})
