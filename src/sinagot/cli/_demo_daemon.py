"""``sinagot demo --daemon``: the daemon's main job, end to end, on this machine.

The embedded XNAT-compatible server serves the demo project on a free loopback
port (from a thread of this process); the daemon follows it until every demo
session is processed and its derivatives uploaded, then both stop. Everything
persists in ``<dir>/daemon``: running the demo again finds the server's
derivatives up to date and uploads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes
from ..daemon import FINISHED
from ..demo import DEMO_CONFIG, DEMO_RECORDS, DEMO_SCRIPTS, load_demo
from ..errors import DaemonError

__all__ = ["DaemonDemo", "run_daemon_demo"]

logger = logging.getLogger(__name__)

PROJECT = "SONETAA"
USER = "demo"
PASSWORD = "demo"
CONFIG_NAME = "sonetaa.toml"
_CHECK_INTERVAL = 0.2


@dataclass(frozen=True, slots=True)
class DaemonDemo:
    """What the demo did, for the command to print."""

    config: Path
    server: str
    status: dict[str, Any]
    jobs: list[dict[str, Any]]
    resources: dict[str, list[str]]
    seconds: float
    # Whether any job ran in this demo (a second demo finds everything up to date).
    worked: bool


def _write_config(base: Path, server: str, socket: Path) -> Path:
    for name, source in DEMO_SCRIPTS.items():
        script = base / "scripts" / name
        if not script.exists():  # the user's edits of a script survive a second run
            atomic_write_bytes(script, source.encode())
    text = DEMO_CONFIG.replace('dataset = "data"', 'dataset = "work"')
    text += f"""
[store]
type = "xnat"
server = "{server}"
project = "{PROJECT}"
user = "{USER}"
password = "{PASSWORD}"
cache_dir = "cache"

[daemon]
poll_interval = 1.0
max_concurrent_jobs = 2
max_attempts = 2
retry_backoff = 1.0
shutdown_timeout = 10.0
state_dir = "state"
socket = "{socket}"
"""
    config = base / CONFIG_NAME
    atomic_write_bytes(config, text.encode())
    return config


def _settled(jobs: list[dict[str, Any]]) -> float | None:
    """When the last demo job finished, if every one is done or failed; else None."""
    by_session = {job["session"]: job for job in jobs}
    if set(by_session) != set(DEMO_RECORDS):
        return None
    if any(job["state"] not in FINISHED for job in by_session.values()):
        return None
    return max(float(job["updated"]) for job in by_session.values())


async def _watch(
    socket: Path, running: asyncio.Task[None], sessions: Callable[[int, int], None]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait (over the control socket) until every session is finished and stays so."""
    from ._control import ControlClient

    client = ControlClient(socket)
    reported = -1
    quiet_since: tuple[float, float] | None = None
    while True:
        await asyncio.sleep(_CHECK_INTERVAL)
        if running.done():
            await running  # raises why the daemon stopped
            raise DaemonError("the demo daemon stopped before it finished: see the log above")
        try:
            jobs = await client.jobs()
        except DaemonError:
            continue  # the socket is not up yet
        done = sum(1 for job in jobs if job["state"] in FINISHED)
        if done != reported:
            reported = done
            sessions(done, len(DEMO_RECORDS))
        finished = _settled(jobs)
        if finished is None:
            continue
        # Our own uploads change the sessions on the server: wait until two polls
        # after the last job found nothing more to do (the first may be mid-way).
        status = await client.status()
        last_poll = status["datasets"][0]["last_poll"] if status["datasets"] else None
        if last_poll is None or last_poll <= finished:
            continue
        if quiet_since is None or quiet_since[0] != finished:
            quiet_since = (finished, last_poll)
        elif last_poll > quiet_since[1]:
            return status, jobs


def run_daemon_demo(
    directory: Path,
    *,
    timeout: float = 300.0,
    progress: Callable[[str], None] | None = None,
    sessions: Callable[[int, int], None] | None = None,
) -> DaemonDemo:
    """Serve the demo project, run the daemon until it has processed it all, stop both.

    ``progress`` hears what happens, ``sessions(done, total)`` the sessions finished
    (default: a ``progress`` line each).
    """
    from ..daemon import Daemon, Notifier, backend_for
    from ..testing import EmulatorServer

    report = progress or (lambda line: logger.info("%s", line))
    finished = sessions or (lambda done, total: report(f"sessions finished: {done}/{total}"))
    begin, started = time.monotonic(), time.time()
    base = directory / "daemon"
    base.mkdir(parents=True, exist_ok=True)
    server = EmulatorServer(base / "xnat", users={USER: PASSWORD})
    try:
        # A short path of our own: Unix socket paths are limited to about 100 bytes.
        with (
            tempfile.TemporaryDirectory(prefix="sinagot-demo-") as run_dir,
            server.running_in_thread(),
        ):
            load_demo(server, PROJECT)
            url = server.url
            socket = Path(run_dir) / "sinagot.sock"
            config = _write_config(base, url, socket)
            report(f"XNAT-compatible server with the demo project {PROJECT} at {url}")
            # The command sets the log level; the config's [log] level must not undo it.
            daemon = Daemon([config], backend_for, notifier=Notifier({}), log_level_forced=True)

            async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
                running = asyncio.create_task(daemon.run())
                try:
                    async with asyncio.timeout(timeout):
                        return await _watch(socket, running, finished)
                except TimeoutError:
                    raise DaemonError(
                        f"the demo did not finish within {timeout:g} s: see the log above"
                    ) from None
                finally:
                    daemon.request_stop()
                    await running

            status, jobs = asyncio.run(main())
            resources = {record: _derivatives(server, record) for record in DEMO_RECORDS}
    finally:
        server.close()
    worked = any(float(job["updated"]) >= started for job in jobs)
    return DaemonDemo(config, url, status, jobs, resources, time.monotonic() - begin, worked)


def _derivatives(server: Any, record: str) -> list[str]:
    from ..testing import Owner

    experiment = server.store.find_experiment(PROJECT, record)
    if experiment is None:
        return []
    return sorted(
        resource.label
        for resource in server.store.resources(Owner("experiment", experiment.id))
        if "___at___" in resource.label
    )
