"""What the XNAT transfer benches share: the emulator as a child process, a store on it."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sinagot.connectors import RetryPolicy, XnatStore

PROJECT = "BENCH"
USER, PASSWORD = "alice", "secret"
START_TIMEOUT = 60.0


def start_emulator(data_dir: Path, profile: str = "fast") -> tuple[subprocess.Popen[str], str]:
    """``sinagot emulator`` on ``data_dir`` with ``profile``; the process and its URL."""
    command = [
        sys.executable,
        "-c",
        "import sys; from sinagot.cli import main; sys.exit(main())",
        "--log-level",
        "WARNING",
        "emulator",
        "--data",
        str(data_dir),
        "--user",
        f"{USER}:{PASSWORD}",
        "--profile",
        profile,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(START_TIMEOUT)
    line = process.stdout.readline().strip() if ready else ""
    match = re.fullmatch(r"listening on (http://\S+)", line)
    if match is None:
        stop(process)
        raise SystemExit(f"the emulator did not start: {line!r}")
    return process, match.group(1)


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def open_store(url: str, root: Path, concurrency: int) -> XnatStore:
    """The store as the benches measure it: ``concurrency`` files and connections at once."""
    return XnatStore(
        url,
        root / "cache",
        user=USER,
        password=PASSWORD,
        project=PROJECT,
        local_root=root / "work",
        concurrent_files=concurrency,
        max_connections=concurrency,
        retry=RetryPolicy(attempts=2),
    )


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
