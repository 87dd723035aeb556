"""The input checksum cache shared by runs, threads and processes of one work tree."""

from __future__ import annotations

import threading
from pathlib import Path

from sinagot.engine.internals import ChecksumCache


def _open_together(root: Path, count: int) -> tuple[list[str], list[BaseException]]:
    """``count`` threads open the cache of ``root`` at the same moment and hash a file."""
    start = threading.Barrier(count)
    digests: list[str] = []
    errors: list[BaseException] = []

    def open_and_hash() -> None:
        start.wait(timeout=30)
        try:
            with ChecksumCache(root) as cache:
                digests.append(cache.md5(root / "input.txt"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_hash) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return digests, errors


def test_many_threads_opening_a_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    # Two daemon jobs of one dataset start together: first opens used to race on
    # switching the new database to WAL ("database is locked", about 1 round in 25).
    for round_number in range(30):
        root = tmp_path / str(round_number)
        root.mkdir()
        (root / "input.txt").write_bytes(b"raw\n")
        digests, errors = _open_together(root, 8)
        assert errors == []
        assert len(digests) == 8 and len(set(digests)) == 1
