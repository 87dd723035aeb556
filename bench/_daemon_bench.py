"""Shared scaffolding of the daemon benchmarks: the real daemon against the XNAT emulator.

The daemon runs as ``sinagot daemon CONFIG`` (the real XNAT backend) in a child
process, so its CPU time, RSS and open fds are read from ``/proc/<pid>`` alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sinagot.cli import ControlClient
from sinagot.config import load_settings
from sinagot.daemon.internals import Journal
from sinagot.engine import FingerprintProbe
from sinagot.errors import DaemonError
from sinagot.testing import EmulatorServer, Owner

T = TypeVar("T")

SINAGOT = str(Path(sys.executable).with_name("sinagot"))
USER, PASSWORD = "bench", "bench"
PROJECT = "BENCH"
# The derivative of the one script the benches' configs run.
DERIVATIVE = "RS_EEG_copy___at___sinagot"

_COPY_SCRIPT = """from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "copy.csv")

    def run(self):
        self.path.output.write_bytes(self.path.input.read_bytes())
"""


def write_config(
    base: Path,
    server: str,
    daemon: Mapping[str, float | int | str],
    *,
    project: str = PROJECT,
    name: str = "bench",
) -> Path:
    """A dataset config ``base/<name>.toml`` following ``project`` on ``server`` with one
    copying script (the daemon names the dataset ``name``)."""
    (base / "scripts" / "EEG").mkdir(parents=True, exist_ok=True)
    (base / "scripts" / "EEG" / "copy.py").write_text(_COPY_SCRIPT)
    lines = [
        "[path]",
        'dataset = "work"',
        'scripts = "scripts"',
        "[records]",
        'id_pattern = "REC-\\\\d{6}-A"',
        "[tasks.RS]",
        'modalities = ["EEG"]',
        "[modalities.EEG]",
        'scripts = ["copy"]',
        "[store]",
        'type = "xnat"',
        f'server = "{server}"',
        f'project = "{project}"',
        f'user = "{USER}"',
        f'password = "{PASSWORD}"',
        'cache_dir = "cache"',
        "[dask]",
        "n_workers = 1",
        "threads_per_worker = 2",
        "processes = false",
        "[log]",
        'level = "WARNING"',
        "[daemon]",
    ]
    for key, value in daemon.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    config = base / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def label(n: int) -> str:
    return f"REC-{n:06d}-A"


def seed_project(
    data: Path, labels: Iterable[str], fill: Callable[[EmulatorServer, str], None] | None = None
) -> None:
    """An emulator data folder: project PROJECT with a session per label, each ``fill``ed."""
    server = EmulatorServer(data, users={USER: PASSWORD})
    try:
        server.create_project(PROJECT)
        for session in labels:
            server.create_session(PROJECT, session)
            if fill is not None:
                fill(server, session)
    finally:
        server.close()


def wait_until(
    predicate: Callable[[], T | None], limit: float, what: str, interval: float = 0.01
) -> T:
    deadline = time.monotonic() + limit
    for _ in range(int(limit / interval) + 1):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"benchmark: {what} not reached within {limit} s")


class DaemonChild:
    """``sinagot daemon CONFIG...`` as a child process, with its /proc figures and socket."""

    def __init__(
        self,
        config: Path | Sequence[Path],
        socket: Path,
        log: Path,
        *,
        probe: Path | None = None,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """``probe``: run the daemon under ``bench/_probe.py``, which writes what it measures
        inside the daemon to that file when :meth:`probe` asks. ``prefix``: a command the
        daemon runs under, which must exec it (``nsenter``): the child is the daemon."""
        configs = [config] if isinstance(config, Path) else list(config)
        self._log = log.open("ab")
        self._probe = probe
        self.started = time.time()
        command = [SINAGOT, "daemon", *map(str, configs)]
        if probe is not None:
            command = [sys.executable, str(Path(__file__).with_name("_probe.py")), str(probe)]
            command += ["daemon", *map(str, configs)]
        self.proc = subprocess.Popen(
            [*prefix, *command],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"} | dict(env or {}),
        )
        self.client = ControlClient(socket)
        wait_until(self._answers, 60, "the daemon's socket")

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(getattr(self.client, method)(*args, **kwargs))

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}")
        try:
            self.call("status")
        except DaemonError:
            return False
        return True

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc")

    def rss_parts_kib(self) -> dict[str, int]:
        """RSS by kind: anonymous (heaps, stacks), file-backed (code, mmapped files), shmem."""
        parts = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                name, value = line.split(":", 1)
                parts[name] = int(value.split()[0])
        return parts

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def probe(self, limit: float = 300.0) -> dict[str, Any]:
        """What the probe measures inside the daemon now (see ``bench/_probe.py``)."""
        assert self._probe is not None, "started without a probe"
        ask = Path(f"{self._probe}.ask")
        ask.touch()
        wait_until(lambda: not ask.exists(), limit, "the probe's answer", interval=0.05)
        document: dict[str, Any] = json.loads(self._probe.read_text())
        return document

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()


class EmulatorChild:
    """``sinagot emulator`` in a child process (so the benchmark's own process does not share
    its GIL), read and steered through the admin endpoints."""

    def __init__(self, data: Path, profile: str = "fast", seed: int = 0) -> None:
        self.proc = subprocess.Popen(
            [
                SINAGOT,
                "emulator",
                "--data",
                str(data),
                "--user",
                f"{USER}:{PASSWORD}",
                "--profile",
                profile,
                "--seed",
                str(seed),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line.split()[-1]

    def _admin(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{path}",
            data=data,
            method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def request_counts(self) -> dict[str, int]:
        """Requests per route template since the last reset."""
        counts: dict[str, int] = self._admin("counters")["requests"]
        return counts

    def reset_counters(self) -> None:
        self._admin("counters/reset", {})

    def set_profile(self, profile: str | Mapping[str, Any]) -> None:
        self._admin("profile", profile)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)


def add_session(server: EmulatorServer, n: int) -> float:
    """Store session ``n`` with its small input; the time (``time.time()``) it was done."""
    server.create_session(PROJECT, label(n))
    data = "".join(f"{i},{n},{i * 0.5}\n" for i in range(100)).encode()
    server.add_scan_file(
        PROJECT, label(n), scan_type="RS", resource="EEG", name="raw.csv", data=data
    )
    return time.time()


def derivative_visible(server: EmulatorServer, n: int) -> bool:
    """Whether session ``n`` has its derivative (with files) and its provenance marker."""
    store = server.store
    experiment = store.find_experiment(PROJECT, label(n))
    if experiment is None:
        return False
    derivative = marker = False
    for resource in store.resources(Owner("experiment", experiment.id)):
        if resource.label == DERIVATIVE:
            derivative = bool(store.files(resource.id))
        elif resource.label == "PROVENANCE":
            marker = store.find_file(resource.id, f"{DERIVATIVE}.json") is not None
    return derivative and marker


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_daemon(
    base: Path, server: EmulatorServer, poll: float, jobs: int, **daemon: float
) -> DaemonChild:
    """The daemon following the emulator's project, once it has listed it; ``daemon``: more
    [daemon] settings."""
    config = write_config(
        base,
        server.url,
        {
            "poll_interval": poll,
            "max_concurrent_jobs": jobs,
            "max_attempts": 1,
            "state_dir": str(base / "state"),
            "socket": str(base / "d.sock"),
            **daemon,
        },
    )
    daemon = DaemonChild(config, base / "d.sock", base / "daemon.log")

    def polled() -> bool:
        (dataset,) = daemon.call("status")["datasets"]
        return dataset["last_poll"] is not None

    wait_until(polled, 60, "the first poll", interval=0.1)
    return daemon


def watch_arrivals(
    server: EmulatorServer,
    pending: dict[int, float],
    seen: dict[int, float],
    arrivals: list[tuple[float, int]],
    added: dict[int, float],
    limit: float,
    tick: Callable[[], None] | None = None,
) -> None:
    """Add the sessions of ``arrivals`` (start offset, n) when due, note when each one
    becomes visible, until all are or ``limit`` seconds pass."""
    start = time.monotonic()
    queue = sorted(arrivals)
    for _ in range(int(limit / 0.02) + 1):
        now = time.monotonic() - start
        while queue and queue[0][0] <= now:
            _, n = queue.pop(0)
            added[n] = pending[n] = add_session(server, n)
        for n in list(pending):
            if derivative_visible(server, n):
                seen[n] = time.time()
                del pending[n]
        if tick is not None:
            tick()
        if not queue and not pending:
            return
        if now > limit:
            break
        time.sleep(0.02)
    raise TimeoutError(
        f"benchmark: {len(pending) + len(queue)} session(s) not visible in {limit} s"
    )


def seed_done_journal(
    state: Path, listings: Mapping[str, Sequence[tuple[str, str]]], configs: Mapping[str, Path]
) -> None:
    """A journal in ``state`` that knows every session of ``listings`` (dataset -> its
    (label, stamp) pairs) as done with the pipeline of its dataset's config in ``configs``:
    a lab's steady state, in which a poll finds nothing to do."""
    fingerprints = {
        dataset: FingerprintProbe(load_settings(config)).current()
        for dataset, config in configs.items()
    }

    async def fill() -> None:
        journal = await Journal.open(state / "journal.sqlite3")
        try:
            for dataset, listing in listings.items():
                await journal.apply_listing(dataset, listing)
                await journal.set_pipeline(dataset, fingerprints[dataset])
        finally:
            await journal.aclose()

    asyncio.run(fill())
    with sqlite3.connect(state / "journal.sqlite3") as db:
        db.execute(
            "UPDATE jobs SET state = 'done', fingerprint_set ="
            " (SELECT fingerprint_set FROM pipelines WHERE pipelines.dataset = jobs.dataset)"
        )


def file_downloads(counts: Mapping[str, int]) -> int:
    """File GETs among ``counts`` (scan files, derivatives, provenance documents)."""
    return sum(n for route, n in counts.items() if route.startswith("GET ") and "/files/" in route)
