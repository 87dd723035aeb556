"""Shared helpers of the cache tests: a counting local source and a worker for child processes.

Child processes run :func:`worker_main` (``python -c``), so crashes and stops
are real: SIGKILL and SIGSTOP hit a real process holding real flocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from sinagot.cache import Cache, EntryKey, LocalFileSource, RemoteFile

KEY = EntryKey("http://127.0.0.1:8080", "PROJ", "REC-000001-A", "scans/1/resources/EEG")
# Resume tests use small checkpoints, so that a few MiB already have a resumable prefix.
CHECKPOINT = 4 << 20
TESTS_DIR = Path(__file__).parent


class CountingSource(LocalFileSource):
    """A local source that appends ``name offset`` to a log file per stream (works across processes).

    ``delay`` sleeps between chunks, so a download lasts long enough to be
    killed or stopped half-way; ``corrupt`` flips one byte in that many streams.
    """

    def __init__(
        self,
        root: Path,
        log: Path,
        *,
        chunk_size: int = 1 << 20,
        delay: float = 0.0,
        corrupt: int = 0,
        supports_range: bool = True,
    ) -> None:
        super().__init__(root, chunk_size=chunk_size)
        self.log = log
        self.delay = delay
        self.corrupt = corrupt
        self.supports_range = supports_range

    async def stream(
        self, file: RemoteFile, offset: int, end: int | None = None
    ) -> AsyncIterator[bytes]:
        with self.log.open("a") as handle:
            handle.write(f"{file.name} {offset}\n")
        first = True
        async for chunk in super().stream(file, offset, end):
            if first and self.corrupt > 0 and chunk:
                self.corrupt -= 1
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            first = False
            if self.delay:
                await asyncio.sleep(self.delay)
            yield chunk


def reads(log: Path) -> list[tuple[str, int]]:
    """The (name, offset) of every stream opened so far."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        name, offset = line.rsplit(" ", 1)
        out.append((name, int(offset)))
    return out


def make_files(src: Path, sizes: dict[str, int], seed: int = 0) -> list[RemoteFile]:
    """Write deterministic pseudo-random files below ``src``; return their listing."""
    files = []
    for i, (name, size) in enumerate(sorted(sizes.items())):
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        block = hashlib.sha256(f"{seed}-{i}".encode()).digest() * 2048  # 64 KiB
        with path.open("wb") as handle:
            remaining = size
            while remaining:
                piece = block[: min(remaining, len(block))]
                handle.write(piece)
                remaining -= len(piece)
        files.append(RemoteFile(name, size, hashlib.md5(path.read_bytes()).hexdigest()))
    return files


def tree_digests(folder: Path) -> dict[str, str]:
    """MD5 of every file below ``folder``, by relative POSIX name."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def expected_digests(files: Sequence[RemoteFile]) -> dict[str, str]:
    return {f.name: f.digest for f in files}


def worker_command(
    cache_root: Path,
    src: Path,
    log: Path,
    files: Sequence[RemoteFile],
    result: Path,
    *,
    delay: float = 0.0,
    chunk_size: int = 1 << 20,
    race_condition_delay: float = 5.0,
    checkpoint: int = CHECKPOINT,
) -> list[str]:
    """A command line running :func:`worker_main` in a fresh interpreter."""
    spec = {
        "cache_root": str(cache_root),
        "src": str(src),
        "log": str(log),
        "files": [[f.name, f.size, f.digest] for f in files],
        "result": str(result),
        "delay": delay,
        "chunk_size": chunk_size,
        "race_condition_delay": race_condition_delay,
        "checkpoint": checkpoint,
    }
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_cache_helpers as h; h.worker_main()"
    return [sys.executable, "-c", code, json.dumps(spec)]


def worker_main() -> None:
    """Fetch the entry described by argv[1] and write its folder's digests to the result file."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    spec = json.loads(sys.argv[1])
    files = [RemoteFile(n, s, d) for n, s, d in spec["files"]]
    source = CountingSource(
        Path(spec["src"]), Path(spec["log"]), chunk_size=spec["chunk_size"], delay=spec["delay"]
    )
    cache = Cache(
        Path(spec["cache_root"]),
        race_condition_delay=spec["race_condition_delay"],
        checkpoint=spec["checkpoint"],
    )
    folder = asyncio.run(cache.fetch(KEY, files, source))
    tmp = Path(spec["result"] + ".tmp")
    tmp.write_text(json.dumps({"folder": str(folder), "digests": tree_digests(folder)}))
    os.replace(tmp, spec["result"])


def mp_fetch(
    cache_root: str, src: str, log: str, files: list[tuple[str, int, str]]
) -> dict[str, str]:
    """multiprocessing target: fetch the entry and return the digests of what it sees."""
    remote = [RemoteFile(n, s, d) for n, s, d in files]
    cache = Cache(Path(cache_root))
    folder = asyncio.run(cache.fetch(KEY, remote, CountingSource(Path(src), Path(log))))
    return tree_digests(folder)


def holder_command(cache_root: Path, key: EntryKey, ready: Path) -> list[str]:
    """A child that marks ``key`` in use, touches ``ready`` and sleeps until killed."""
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_cache_helpers as h; "
        "h.holder_main()"
    )
    spec = [str(cache_root), key.server, key.project, key.session, key.entry, str(ready)]
    return [sys.executable, "-c", code, json.dumps(spec)]


def holder_main() -> None:
    root, server, project, session, entry, ready = json.loads(sys.argv[1])
    with Cache(Path(root)).using(EntryKey(server, project, session, entry)):
        Path(ready).touch()
        while True:  # bounded by the test, which kills this process
            time.sleep(1)


def user_loop_command(
    cache_root: Path, src: Path, files: Sequence[RemoteFile], rounds: int
) -> list[str]:
    """A child that ``rounds`` times marks the entry in use, fetches it and checks every byte."""
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_cache_helpers as h; "
        "h.user_loop_main()"
    )
    spec = [str(cache_root), str(src), [[f.name, f.size, f.digest] for f in files], rounds]
    return [sys.executable, "-c", code, json.dumps(spec)]


def user_loop_main() -> None:
    root, src, listing, rounds = json.loads(sys.argv[1])
    files = [RemoteFile(n, s, d) for n, s, d in listing]
    cache = Cache(Path(root))

    async def run() -> None:
        for _ in range(rounds):
            async with cache.using(KEY):
                folder = await cache.fetch(KEY, files, LocalFileSource(Path(src)))
                await asyncio.sleep(0.01)  # give gc a chance to run while the entry is in use
                if tree_digests(folder) != expected_digests(files):
                    raise SystemExit(f"entry changed under a user: {folder}")

    asyncio.run(run())
