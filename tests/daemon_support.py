"""Helpers of the daemon tests: dataset configs on disk and the daemon as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket as socket_module
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from sinagot.cli import ControlClient
from sinagot.errors import DaemonError

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent
ENTRY = TESTS / "daemon_entry.py"
BACKEND = "daemon_backend:factory"


def daemon_table(tmp: Path, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "poll_interval": 0.2,
        "max_concurrent_jobs": 2,
        "job_timeout": 30.0,
        "max_attempts": 2,
        "retry_backoff": 0.1,
        "shutdown_timeout": 10.0,
        "socket": str(tmp / "run" / "sinagot.sock"),
        "state_dir": str(tmp / "state"),
    }
    table.update(overrides)
    return table


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(value)


def write_config(
    tmp: Path, name: str, daemon: Mapping[str, Any] | None = None, id_pattern: str = r"REC-\d+"
) -> Path:
    """A local-store dataset ``tmp/<name>`` with its config ``tmp/<name>/<name>.toml``."""
    base = tmp / name
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "scripts" / "EEG").mkdir(parents=True, exist_ok=True)
    (base / "scripts" / "EEG" / "preprocess.py").write_text("# test script\n")
    lines = [
        "[path]",
        'dataset = "data"',
        'scripts = "scripts"',
        "[records]",
        f"id_pattern = {_toml_value(id_pattern)}",
        "[tasks.RS]",
        'modalities = ["EEG"]',
        "[modalities.EEG]",
        'scripts = ["preprocess"]',
    ]
    if daemon:
        lines.append("[daemon]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in daemon.items()]
    config = base / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def add_session(
    config: Path,
    label: str,
    *,
    content: str = "data",
    sleep: float | None = None,
    fail: str | None = None,
) -> Path:
    session = config.parent / "data" / label
    session.mkdir(parents=True, exist_ok=True)
    (session / "a.dat").write_text(content)
    if sleep is not None:
        (session / "sleep").write_text(str(sleep))
    if fail is not None:
        (session / "fail").write_text(fail)
    (session / "stamp").write_text(str(time.time_ns()))
    return session


def touch_session(config: Path, label: str) -> None:
    stamp = config.parent / "data" / label / "stamp"
    before = stamp.stat().st_mtime_ns
    for _ in range(100):
        stamp.write_text(str(time.time_ns()))
        if stamp.stat().st_mtime_ns != before:
            return
        time.sleep(0.01)
    raise AssertionError(f"mtime of {stamp} does not move")


def uploads(config: Path) -> list[str]:
    log = config.parent / "out" / "uploads.log"
    return log.read_text().split() if log.exists() else []


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll ``predicate`` (bounded in count and time) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def wait_for_async(predicate: Callable[[], object], what: str, limit: float = 10.0) -> None:
    """Poll ``predicate`` on the event loop (bounded in count and time) until it is truthy."""
    async with asyncio.timeout(limit):
        for _ in range(int(limit / 0.02) + 1):
            if predicate():
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {what}")


class DaemonProcess:
    """``sinagot daemon`` with the test backend, as a real child process."""

    def __init__(
        self, tmp: Path, configs: list[Path], env: Mapping[str, str] | None = None
    ) -> None:
        self.tmp = tmp
        self.configs = configs
        self.socket = tmp / "run" / "sinagot.sock"
        self.log = tmp / "daemon.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = ControlClient(self.socket)

    # How long the daemon may take to answer after start, and to exit after SIGTERM.
    ready_timeout = 30.0
    stop_timeout = 30.0

    def _command(self) -> list[str]:
        return [sys.executable, str(ENTRY), *map(str, self.configs)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SINAGOT_TEST_BACKEND=BACKEND,
            PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        )
        return env

    def start(self, wait: bool = True) -> Self:
        """Start the daemon; unless ``wait`` is False, wait until its socket answers."""
        env = self._env()
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.extra_env)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.tmp,
            )
        if wait:
            self.wait_ready(self.ready_timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(getattr(self.client, method)(*args, **kwargs))

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()}")
        try:
            self.call("status")
        except DaemonError:
            return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(self._answers, timeout, "the daemon's socket")

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("jobs", **filters)
        return result

    def wait_jobs(self, state: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        return wait_for(
            lambda: jobs if len(jobs := self.jobs(state=state)) >= count else None,
            timeout,
            f"{count} job(s) {state}",
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int:
        """SIGTERM, then the exit code; SIGKILL if it does not stop in time."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def ensure_stopped(self) -> None:
        """Teardown: SIGKILL the daemon if a test left it running, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def raw_request(
    socket_path: str | Path, method: str, target: str, payload: bytes | None = None
) -> tuple[int, Any]:
    """One HTTP/1.1 request over a Unix socket with a plain blocking socket (fork-safe)."""
    if payload is None:
        payload = (
            f"{method} {target} HTTP/1.1\r\nHost: sinagot\r\nConnection: close\r\n\r\n".encode()
        )
    with socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(payload)
        chunks = []
        for _ in range(10_000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def listening_tcp(pid: int) -> set[tuple[str, int]]:
    """The (host, port) of every TCP socket process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            host_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(host_hex)
            # /proc prints addresses as host-order 32-bit words.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            host = str(ipaddress.ip_address(words[: width // 2]))
            found.add((host, int(port_hex, 16)))
    return found


def listening(pid: int) -> set[tuple[str, int]]:
    """The (host, port) of every TCP socket process ``pid`` and its descendants listen on."""
    import psutil

    pids = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    found: set[tuple[str, int]] = set()
    for each in pids:
        try:
            found.update(listening_tcp(each))
        except FileNotFoundError:  # a child that just ended
            continue
    return found
