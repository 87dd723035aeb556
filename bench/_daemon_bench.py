"""Shared scaffolding of the daemon benchmarks: the real daemon against the XNAT emulator.

The daemon runs as ``sinagot daemon CONFIG`` (the real XNAT backend) in a child
process, so its CPU time, RSS and open fds are read from ``/proc/<pid>`` alone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sinagot.daemon import ControlClient
from sinagot.errors import DaemonError

T = TypeVar("T")

SINAGOT = str(Path(sys.executable).with_name("sinagot"))
USER, PASSWORD = "bench", "bench"
PROJECT = "BENCH"

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

    def __init__(self, config: Path | Sequence[Path], socket: Path, log: Path) -> None:
        configs = [config] if isinstance(config, Path) else list(config)
        self._log = log.open("ab")
        self.started = time.time()
        self.proc = subprocess.Popen(
            [SINAGOT, "daemon", *map(str, configs)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
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

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
