"""Shared scaffolding of the daemon benchmarks: configs on disk and an in-memory backend.

The backend stands in for the real connector (the lead swaps in the XNAT backend);
everything else — journal, pollers, queue, workers, control socket — is the real daemon.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from sinagot.daemon import Phase, ProcessResult, SessionInfo


class MemoryBackend:
    """A project held in memory; processing sleeps ``work`` seconds per phase."""

    def __init__(self, name: str, work: float = 0.0) -> None:
        self.name = name
        self.sessions: dict[str, str] = {}
        self.listings = 0
        self.processed = 0
        self.work = work

    async def list_sessions(self) -> Sequence[SessionInfo]:
        self.listings += 1
        return [SessionInfo(label, stamp) for label, stamp in self.sessions.items()]

    async def process_session(
        self, label: str, enter_phase: Callable[[Phase], Awaitable[None]]
    ) -> ProcessResult:
        for phase in Phase:
            await enter_phase(phase)
            await asyncio.sleep(self.work)
        self.processed += 1
        return ProcessResult(ran=1, uploaded=1)

    async def aclose(self) -> None:
        return None


def write_config(base: Path, daemon: dict[str, float | int | str]) -> Path:
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "scripts" / "EEG").mkdir(parents=True, exist_ok=True)
    (base / "scripts" / "EEG" / "preprocess.py").write_text("# bench\n")
    lines = [
        "[path]",
        'dataset = "data"',
        'scripts = "scripts"',
        "[records]",
        'id_pattern = "REC-\\\\d+"',
        "[tasks.RS]",
        'modalities = ["EEG"]',
        "[modalities.EEG]",
        'scripts = ["preprocess"]',
        "[log]",
        'level = "WARNING"',
        "[daemon]",
    ]
    for key, value in daemon.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    config = base / "bench.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
