"""Poll cost of an unchanged project of 10,000 sessions: requests and CPU per cycle.

Run: ``python bench/daemon_poll.py [--sessions N] [--cycles K]``. The baseline is the
cost of producing the listing alone, measured in the same run; the ratio shows what
the daemon adds on top (diffing against the journal's last listing). Targets:
1 request per cycle, < 200 ms CPU per cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import MemoryBackend, write_config
from sinagot.config import Settings
from sinagot.daemon import Daemon
from sinagot.daemon._journal import Journal
from sinagot.daemon._systemd import Notifier


async def _wait(predicate: Callable[[], object], limit: float = 60.0) -> None:
    async with asyncio.timeout(limit):
        for _ in range(int(limit / 0.001)):
            if predicate():
                return
            await asyncio.sleep(0.001)
    raise TimeoutError(f"benchmark condition not met within {limit} s")


async def bench(sessions: int, cycles: int, base: Path) -> None:
    backend = MemoryBackend("bench")
    backend.sessions = {f"REC-{n}": f"2026-01-01 00:00:{n % 60:02d}" for n in range(sessions)}
    state = base / "state"
    # A journal that already knows every session as done: the steady state of a lab.
    journal = await Journal.open(state / "journal.sqlite3")
    await journal.apply_listing("bench", backend.sessions.items())
    await journal.aclose()
    with sqlite3.connect(state / "journal.sqlite3") as db:
        db.execute("UPDATE jobs SET state = 'done'")

    config = write_config(
        base, {"poll_interval": 3600.0, "state_dir": str(state), "socket": str(base / "d.sock")}
    )

    def factory(settings: Settings) -> MemoryBackend:
        return backend

    daemon = Daemon([config], factory, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await _wait(lambda: backend.listings >= 1 and daemon._datasets["bench"].next_poll)
        dataset = daemon._datasets["bench"]

        baseline_cpu = []
        for _ in range(cycles):
            start = time.process_time()
            await backend.list_sessions()
            baseline_cpu.append(time.process_time() - start)
        backend.listings -= cycles

        cpu, wall = [], []
        listings_before = backend.listings
        for _ in range(cycles):
            marker = dataset.next_poll
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            daemon.poll_now()
            await _wait(lambda m=marker: dataset.next_poll != m)
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start_wall)
        requests = (backend.listings - listings_before) / cycles
        assert backend.processed == 0, "an unchanged project must not start jobs"
    finally:
        daemon.request_stop()
        await task

    def ms(values: list[float]) -> float:
        return 1000 * sorted(values)[len(values) // 2]

    print(f"sessions: {sessions}, cycles: {cycles}")
    print(f"requests per cycle: {requests:g} (target 1)")
    print(f"CPU per cycle: {ms(cpu):.1f} ms median (target < 200 ms); wall {ms(wall):.1f} ms")
    print(f"baseline (listing alone): {ms(baseline_cpu):.1f} ms CPU")
    print(f"ratio poll / listing: {ms(cpu) / max(ms(baseline_cpu), 1e-3):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sinagot-bench-") as tmp:
        asyncio.run(bench(args.sessions, args.cycles, Path(tmp)))


if __name__ == "__main__":
    main()
