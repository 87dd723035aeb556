"""sd_notify on a real datagram socket, journald priority prefixes, and the unit file."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemon_table, wait_for, write_config
from sinagot.daemon._systemd import Notifier

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "sinagot.service"


class Listener:
    """Collects sd_notify datagrams (bounded waits)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 20.0) -> str:
        def seen() -> str | None:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())
            return next((m for m in self.messages if line in m.splitlines()), None)

        return wait_for(seen, timeout, f"sd_notify {line!r}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    with sock:
        yield Listener(sock), str(path)


def test_notify_messages_over_a_daemon_life(tmp_path: Path, listener: tuple[Listener, str]) -> None:
    notify, address = listener
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    log = tmp_path / "daemon.log"
    log.touch()
    stat = log.stat()
    daemon = DaemonProcess(
        tmp_path,
        [config],
        env={
            "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "200000",
            "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
        },
    )
    daemon.start(wait=False)
    try:
        ready = notify.wait_for("READY=1")
        assert any(line.startswith("STATUS=running") for line in ready.splitlines())
        notify.wait_for("WATCHDOG=1")
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.splitlines())
        daemon.signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert daemon.wait_exit() == 0
    finally:
        daemon.ensure_stopped()
    lines = [line for line in daemon.log_text().splitlines() if line]
    assert lines
    assert all(line[0] == "<" and line[2] == ">" for line in lines), lines[:3]
    assert any(line.startswith("<6>sinagot.daemon._service: ready") for line in lines)


def test_abstract_notify_socket_and_environment_is_unset() -> None:
    name = f"sinagot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        env = {"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
        notifier = Notifier(env)
        try:
            assert env == {}
            # The watchdog belongs to pid 1, not to us.
            assert notifier.watchdog_interval is None
            notifier.ready("testing")
            assert sock.recv(4096) == b"READY=1\nSTATUS=testing"
        finally:
            notifier.close()


def test_notifier_without_socket_is_silent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("nobody listens")
    notifier.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    # verify wants the ExecStart binary to exist; point it at a stand-in.
    unit = tmp_path / "sinagot.service"
    fake = tmp_path / "sinagot"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/sinagot", str(fake)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert result.returncode == 0, result.stderr
    assert "sinagot.service" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_hardening_is_rated_ok_or_better() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert match.group(2) in {"SAFE", "OK"}, match.group(0)
