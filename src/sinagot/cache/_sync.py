"""Making a whole staged generation durable at once, before it is published.

Syncing files one by one as they finish costs a journal commit each; syncing
them together from a few threads lets the file system batch those commits.
The guarantee is unchanged: the manifest is renamed into place only after
every file and every folder of the generation reached the disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .._fs import fsync_dir

__all__ = ["sync_tree"]

# Enough concurrent fsyncs for the file system to group them; bounded, as threads are.
_SYNC_THREADS = 16


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path, names: Iterable[str]) -> None:
    """fsync the files ``names`` (relative to ``root``), then every folder below and at ``root``."""
    paths = [root / name for name in names]
    if len(paths) > 1:
        with ThreadPoolExecutor(min(_SYNC_THREADS, len(paths)), "sinagot-fsync") as pool:
            # list(): raise the first error (e.g. ENOSPC, EIO) here, after all finished.
            list(pool.map(_fsync_file, paths))
    else:
        for path in paths:
            _fsync_file(path)
    for dirpath, _dirnames, _filenames in os.walk(root):
        fsync_dir(Path(dirpath))
