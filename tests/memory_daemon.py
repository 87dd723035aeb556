"""An in-process daemon over in-memory backends, for the daemon service tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from daemon_support import daemon_table, wait_for_async, write_config
from sinagot.cli import ControlClient
from sinagot.config import Settings, load_settings
from sinagot.daemon import (
    Daemon,
    Fingerprints,
    JobState,
    Notifier,
    ProcessResult,
    SessionInfo,
    StepMark,
)
from sinagot.daemon.internals import PHASES


class MemoryBackend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: dict[str, str] = {}
        self.hang: set[str] = set()
        # The phases to announce for a session, when not the usual ones.
        self.announce: dict[str, Sequence[JobState]] = {}
        self.listings = 0
        self.processed: list[str] = []
        self.closed = False
        # Step unit -> fingerprint: the pipeline as it is now (see pipeline()).
        self.steps: dict[str, str] = {}

    async def pipeline(self, settings: Settings | None = None) -> Fingerprints:
        return Fingerprints(MappingProxyType({u: StepMark(f, f) for u, f in self.steps.items()}))

    async def list_sessions(self) -> Sequence[SessionInfo]:
        self.listings += 1
        return [SessionInfo(label, stamp) for label, stamp in self.sessions.items()]

    async def still_listed(self, label: str) -> bool:
        return label in self.sessions

    async def process_session(
        self, label: str, enter_phase: Callable[[JobState], Awaitable[None]]
    ) -> ProcessResult:
        ran_with = await self.pipeline()
        for phase in self.announce.get(label, PHASES):
            await enter_phase(phase)
            if phase == JobState.RUNNING and label in self.hang:
                await asyncio.sleep(3600)
        self.processed.append(label)
        return ProcessResult(ran=1, uploaded=1, fingerprints=ran_with)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Running:
    daemon: Daemon
    client: ControlClient
    backends: dict[str, MemoryBackend]
    configs: dict[str, Path]
    task: asyncio.Task[None]
    # Set while the daemon may read its configs; clear it to hold a reload mid-way.
    loading: threading.Event

    async def wait(self, predicate: Callable[[], Any], what: str, limit: float = 10.0) -> None:
        await wait_for_async(predicate, what, limit)

    async def states(self) -> dict[str, str]:
        return {job["session"]: job["state"] for job in await self.client.jobs()}


@contextlib.asynccontextmanager
async def memory_daemon(tmp_path: Path, **daemon: Any) -> AsyncIterator[Running]:
    """An in-process daemon serving config ``one`` (``two`` is written for reloads) of
    MemoryBackends; ``daemon``: [daemon] settings over the fast defaults here."""
    backends: dict[str, MemoryBackend] = {}

    def factory(settings: Settings) -> MemoryBackend:
        backend = MemoryBackend(settings.config_path.stem)
        old = backends.get(backend.name)
        if old is not None:
            backend.sessions, backend.hang, backend.announce, backend.steps = (
                old.sessions,
                old.hang,
                old.announce,
                old.steps,
            )
        backends[backend.name] = backend
        return backend

    table = daemon_table(
        tmp_path, **{"poll_interval": 0.05, "job_timeout": 0.5, "max_attempts": 2, **daemon}
    )
    configs = {name: write_config(tmp_path, name, table) for name in ("one", "two")}
    loading = threading.Event()
    loading.set()

    def loader(path: Path) -> Settings:
        assert loading.wait(timeout=20)
        return load_settings(path)

    daemon = Daemon([configs["one"]], factory, notifier=Notifier({}), settings_loader=loader)
    ready: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(socket_ready=ready.set_result))
    try:
        async with asyncio.timeout(20):
            await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        assert not task.done(), task
        client = ControlClient(tmp_path / "run" / "sinagot.sock")
        yield Running(daemon, client, backends, configs, task, loading)
    finally:
        daemon.request_stop()
        async with asyncio.timeout(20):
            await task
