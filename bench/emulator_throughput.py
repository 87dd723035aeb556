"""Throughput of the XNAT emulator against a raw loopback socket copy of the same bytes.

Two workloads, each fetched by 8 concurrent clients on persistent connections:

* one 1 GiB file, each client fetching a 1/8 slice with a Range request;
* 1,000 files of 100 KiB, shared out among the clients.

The baseline serves the same files from another process over plain TCP
(``socket.sendfile`` after a one-line request), so the ratio shows what HTTP,
authentication, the index lookup and aiohttp cost. Run:
``python bench/emulator_throughput.py [--big-mib N] [--small-count K]`` (about a minute;
temporary files only). The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import selectors
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from sinagot.testing import EmulatorServer

CLIENTS = 8
BIG_MIB = 1024
SMALL_COUNT = 1000
SMALL_SIZE = 100 * 1024
READ_SIZE = 256 * 1024
START_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0

_RAW_SERVER = textwrap.dedent(
    """
    import socket, sys, threading
    root = sys.argv[1]
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def serve(conn):
        with conn, conn.makefile("rb") as requests:
            for line in requests:
                name, offset, length = line.decode().split()
                with open(f"{root}/{name}", "rb") as source:
                    conn.sendfile(source, int(offset), int(length))

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    """
)

Job = tuple[str, int, int]  # file name, offset, length
Fetch = Callable[[Job], Awaitable[int]]


def _big_jobs(big_size: int) -> list[Job]:
    part = big_size // CLIENTS
    return [("big.bin", i * part, part) for i in range(CLIENTS)]


def _small_jobs(small_count: int) -> list[Job]:
    return [(f"small{i:04d}.bin", 0, SMALL_SIZE) for i in range(small_count)]


def _prepare(root: Path, big_size: int, small_count: int) -> Path:
    """Write the files once: as plain files for the baseline and into an emulator data dir."""
    files = root / "files"
    files.mkdir()
    with (files / "big.bin").open("wb") as out:
        out.truncate(big_size)  # sparse: quick to create; served like any other file
    pattern = bytes(range(256)) * (SMALL_SIZE // 256)
    for i in range(small_count):
        (files / f"small{i:04d}.bin").write_bytes(i.to_bytes(4, "big") + pattern[4:])
    data = root / "emulator"
    server = EmulatorServer(data, users={"bench": "bench"})
    server.create_project("B")
    server.create_session("B", "S")
    for path in sorted(files.iterdir()):
        server.add_scan_file("B", "S", scan_type="T", resource="R", name=path.name, data=path)
    server.close()
    return files


async def _run_workers(jobs: list[Job], fetch: Fetch) -> int:
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    received = 0

    async def worker() -> None:
        nonlocal received
        while not queue.empty():
            # Await first: `received += await ...` would read `received` before the await
            # and lose the other workers' additions.
            count = await fetch(queue.get_nowait())
            received += count

    async with asyncio.timeout(RUN_TIMEOUT), asyncio.TaskGroup() as group:
        for _ in range(CLIENTS):
            group.create_task(worker())
    return received


async def _raw_copy(port: int, jobs: list[Job]) -> float:
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CLIENTS)]
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for connection in connections:
        free.put_nowait(connection)

    async def fetch(job: Job) -> int:
        reader, writer = await free.get()
        try:
            writer.write(f"{job[0]} {job[1]} {job[2]}\n".encode())
            remaining = job[2]
            while remaining:
                chunk = await reader.read(min(READ_SIZE, remaining))
                if not chunk:
                    raise ConnectionError("raw server closed early")
                remaining -= len(chunk)
            return job[2]
        finally:
            free.put_nowait((reader, writer))

    started = time.perf_counter()
    total = await _run_workers(jobs, fetch)
    elapsed = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return total / elapsed


async def _emulator_copy(url: str, jobs: list[Job]) -> float:
    base = f"{url}/data/projects/B/experiments/S/scans/1/resources/R/files"
    token = base64.b64encode(b"bench:bench").decode()
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Authorization": f"Basic {token}"}
    ) as http:
        async with http.get(f"{url}/data/JSESSION") as login:  # one session, as clients do
            login.raise_for_status()

        async def fetch(job: Job) -> int:
            name, offset, length = job
            headers = (
                {} if length == SMALL_SIZE else {"Range": f"bytes={offset}-{offset + length - 1}"}
            )
            received = 0
            async with http.get(f"{base}/{name}", headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.content.iter_chunked(READ_SIZE):
                    received += len(chunk)
            if received != length:
                raise ConnectionError(f"{name}: got {received} of {length} bytes")
            return received

        started = time.perf_counter()
        total = await _run_workers(jobs, fetch)
        elapsed = time.perf_counter() - started
    return total / elapsed


def _start(command: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(START_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    match = re.fullmatch(pattern, line.strip())
    if match is None:
        process.kill()
        raise RuntimeError(f"could not start {command[:3]}: first line {line!r}")
    return process, match.group(1)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=BIG_MIB, help="size of the big file")
    parser.add_argument("--small-count", type=int, default=SMALL_COUNT, help="small files")
    args = parser.parse_args()
    figures: dict[str, float] = {"big_mib": args.big_mib, "small_count": args.small_count}
    with tempfile.TemporaryDirectory(prefix="sinagot-bench-") as scratch:
        root = Path(scratch)
        print(f"preparing {args.big_mib} MiB + {args.small_count} x 100 KiB files ...", flush=True)
        files = _prepare(root, args.big_mib << 20, args.small_count)
        raw, port = _start([sys.executable, "-c", _RAW_SERVER, str(files)], r"(\d+)")
        emulator, url = _start(
            [
                sys.executable,
                "-c",
                "import sys; from sinagot.cli import main; sys.exit(main())",
                "emulator",
                "--data",
                str(root / "emulator"),
                "--user",
                "bench:bench",
            ],
            r"listening on (http://\S+)",
        )
        try:
            for name, title, jobs in (
                ("big", f"1 x {args.big_mib} MiB (8 Range slices)", _big_jobs(args.big_mib << 20)),
                ("small", f"{args.small_count} x 100 KiB", _small_jobs(args.small_count)),
            ):
                baseline = asyncio.run(_raw_copy(int(port), jobs))
                served = asyncio.run(_emulator_copy(url, jobs))
                print(
                    f"{title:28s} emulator {served / 1e6:8.1f} MB/s"
                    f"   raw socket {baseline / 1e6:8.1f} MB/s   ratio {served / baseline:5.2f}",
                    flush=True,
                )
                figures[f"{name}_emulator_mb_s"] = round(served / 1e6, 1)
                figures[f"{name}_raw_mb_s"] = round(baseline / 1e6, 1)
                figures[f"{name}_ratio"] = round(served / baseline, 3)
        finally:
            _stop(emulator)
            _stop(raw)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
