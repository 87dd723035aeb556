"""Bounded soak: sessions keep arriving while the daemon runs; RSS and open fds stay flat.

Run: ``python bench/daemon_soak.py [--seconds 90] [--rate 20]``. After a warm-up, the
baseline is the process's RSS and fd count; at the end both are measured again and
printed as ratios (target: flat, about 1.0x). Status and metrics are read over the
control socket throughout, as a monitoring system would.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_bench import MemoryBackend, open_fds, rss_kib, write_config
from sinagot.config import Settings
from sinagot.daemon import ControlClient, Daemon
from sinagot.daemon._systemd import Notifier


async def soak(seconds: float, rate: float, base: Path) -> None:
    backend = MemoryBackend("soak", work=0.002)
    config = write_config(
        base,
        {
            "poll_interval": 0.5,
            "max_concurrent_jobs": 4,
            "state_dir": str(base / "state"),
            "socket": str(base / "d.sock"),
        },
    )

    def factory(settings: Settings) -> MemoryBackend:
        return backend

    daemon = Daemon([config], factory, notifier=Notifier({}))
    client = ControlClient(base / "d.sock")
    task = asyncio.create_task(daemon.run())
    added = 0
    samples: list[tuple[float, int, int]] = []
    warmup = min(10.0, seconds / 4)
    start = time.monotonic()
    try:
        await asyncio.sleep(0.5)
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate)
            while added < due:
                backend.sessions[f"REC-{added}"] = "1"
                added += 1
            # Some sessions change on the server, which re-queues finished jobs.
            if added > 10 and added % 7 == 0:
                backend.sessions[f"REC-{added // 2}"] = str(added)
            await client.status()
            await client.metrics()
            if elapsed >= warmup and (not samples or elapsed - samples[-1][0] >= 5):
                gc.collect()
                samples.append((elapsed, rss_kib(), open_fds()))
            await asyncio.sleep(0.25)
        async with asyncio.timeout(60):
            for _ in range(600):
                if backend.processed >= added:
                    break
                await asyncio.sleep(0.1)
        gc.collect()
        samples.append((time.monotonic() - start, rss_kib(), open_fds()))
    finally:
        daemon.request_stop()
        await task

    (_, rss0, fd0), (_, rss1, fd1) = samples[0], samples[-1]
    print(f"soak: {seconds:g} s, {added} sessions added, {backend.processed} jobs processed")
    print(
        f"RSS: {rss0 / 1024:.1f} MiB after warm-up -> {rss1 / 1024:.1f} MiB at end "
        f"(ratio {rss1 / rss0:.2f}x, target ~1.0x)"
    )
    print(f"open fds: {fd0} -> {fd1} (ratio {fd1 / fd0:.2f}x, target 1.0x)")
    print(
        "samples (s, RSS MiB, fds): "
        + ", ".join(f"({t:.0f}, {r / 1024:.1f}, {f})" for t, r, f in samples)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--rate", type=float, default=20.0, help="new sessions per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sinagot-soak-") as tmp:
        asyncio.run(soak(args.seconds, args.rate, Path(tmp)))


if __name__ == "__main__":
    main()
