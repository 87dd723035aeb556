"""The control socket under misuse: idle, half-sent and flooding clients, against a real daemon."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemon_table, wait_for, write_config
from sinagot.daemon.internals import ACCEPT_BATCH, MAX_CONNECTIONS, REQUEST_TIMEOUT

logger = logging.getLogger(__name__)

SINAGOT = str(Path(sys.executable).with_name("sinagot"))
IDLE = 600
HALF_SENT = 100
HALF_REQUEST = b"GET /v1/status HTTP/1.1\r\nHost: sinagot\r\nX-Slow: "
# Beyond its baseline, the daemon may hold the cap plus the few batches of sockets
# accepted but not yet admitted, or evicted but not yet closed.
FD_LIMIT = MAX_CONNECTIONS + 4 * ACCEPT_BATCH
# How long `status` may take while the socket is under attack.
STATUS_UNDER_ATTACK = 2.0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    process = DaemonProcess(tmp_path, [config]).start()
    try:
        yield process
    finally:
        process.ensure_stopped()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect(path: Path | str) -> socket.socket:
    """A connected socket; waits (bounded) while the daemon's listen queue is full."""
    for _ in range(500):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(str(path))
        except BlockingIOError:
            sock.close()
            time.sleep(0.01)
            continue
        return sock
    raise AssertionError(f"the listen queue of {path} stayed full")


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes; socket.timeout if it does not close in time."""
    sock.settimeout(timeout)
    chunks = []
    for _ in range(10_000):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def wait_closed(socks: list[socket.socket], deadline: float) -> dict[int, float]:
    """When the server closed each socket (fileno -> monotonic time), until ``deadline``."""
    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                assert not data, f"the daemon answered an incomplete request: {data!r}"
                closed[sock.fileno()] = time.monotonic()
                selector.unregister(sock)
    return closed


def timed_status(daemon: DaemonProcess) -> float:
    started = time.monotonic()
    assert daemon.call("status")["pid"] == daemon.pid
    return time.monotonic() - started


def test_idle_and_half_sent_connections_neither_lock_out_status_nor_pile_up(
    daemon: DaemonProcess,
) -> None:
    before = fd_count(daemon.pid)
    idle_status = timed_status(daemon)
    peak = before
    with contextlib.ExitStack() as stack:
        attackers = []
        for n in range(IDLE + HALF_SENT):
            sock = stack.enter_context(connect(daemon.socket))
            if n >= IDLE:
                sock.sendall(HALF_REQUEST)
            attackers.append(sock)
            if n % 25 == 0:
                peak = max(peak, fd_count(daemon.pid))
        opened = time.monotonic()

        latencies = []
        for _ in range(5):
            latencies.append(timed_status(daemon))
            peak = max(peak, fd_count(daemon.pid))
        started = time.monotonic()
        table = subprocess.run(
            [SINAGOT, "status", "--socket", str(daemon.socket)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        cli_seconds = time.monotonic() - started
        assert table.returncode == 0, table.stderr
        assert "lab" in table.stdout
        peak = max(peak, fd_count(daemon.pid))
        # Otherwise the attackers' deadline passed and nothing was measured under attack.
        assert time.monotonic() < opened + REQUEST_TIMEOUT, "too slow to measure under attack"

        closed = wait_closed(attackers, opened + REQUEST_TIMEOUT + 5)
        assert len(closed) == len(attackers), f"{len(attackers) - len(closed)} still open"
        # Evicted at once, or kept by the cap until their deadline.
        evicted = sum(1 for at in closed.values() if at < opened + REQUEST_TIMEOUT - 1)
        timed_out = len(closed) - evicted
        last = max(closed.values())
    after = wait_for(
        lambda: n if (n := fd_count(daemon.pid)) <= before + 2 else None,
        10,
        "the daemon's fds back to its baseline",
    )
    logger.info(
        "fds before %d, peak %d, after %d; status %.3f s before, under attack %s s "
        "(CLI %.3f s); %d evicted, %d timed out, the last %.1f s after the attack",
        before,
        peak,
        after,
        idle_status,
        [round(t, 3) for t in latencies],
        cli_seconds,
        evicted,
        timed_out,
        last - opened,
    )
    assert max(latencies) < STATUS_UNDER_ATTACK, latencies
    assert peak <= before + FD_LIMIT, (before, peak)
    assert evicted >= IDLE + HALF_SENT - MAX_CONNECTIONS, evicted
    # Each status call evicted one more; the others stayed until their deadline.
    assert timed_out >= MAX_CONNECTIONS - 10, timed_out
    assert last >= opened + REQUEST_TIMEOUT - 1
    assert timed_status(daemon) < 1
    log = daemon.log_text()
    assert f"control socket: {MAX_CONNECTIONS} connections open, the cap" in log
    assert "control socket: down to" in log
    assert daemon.stop() == 0


def test_slow_but_complete_request_is_served_then_closed(daemon: DaemonProcess) -> None:
    request = b"GET /v1/status HTTP/1.1\r\nHost: sinagot\r\nAccept: application/json\r\n\r\n"
    pieces = [request[i : i + 12] for i in range(0, len(request), 12)]
    pause = (REQUEST_TIMEOUT * 0.6) / len(pieces)
    with connect(daemon.socket) as sock:
        started = time.monotonic()
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        # HTTP/1.1 keeps a connection by default: the daemon closes it anyway.
        answer = read_to_eof(sock, 3)
    assert time.monotonic() - started < REQUEST_TIMEOUT
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Connection: close" in head
    assert json.loads(body)["pid"] == daemon.pid
    assert daemon.stop() == 0


def test_a_body_that_never_arrives_is_cut_off_and_does_nothing(daemon: DaemonProcess) -> None:
    head = b"POST /v1/pause HTTP/1.1\r\nHost: sinagot\r\nContent-Length: 100\r\n\r\n"
    with connect(daemon.socket) as sock:
        started = time.monotonic()
        sock.sendall(head + b"{}")
        answer = read_to_eof(sock, REQUEST_TIMEOUT + 5)
        waited = time.monotonic() - started
    assert answer == b""
    assert REQUEST_TIMEOUT - 1 <= waited <= REQUEST_TIMEOUT + 2, waited
    assert daemon.call("status")["paused"] is False

    # A body that does arrive is read and the request served.
    with connect(daemon.socket) as sock:
        sock.sendall(head.replace(b"100", b"2") + b"{}")
        answer = read_to_eof(sock, 5)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert daemon.call("status")["paused"] is True
    assert daemon.stop() == 0


FLOOD_SECONDS = 7.0
FLOOD_HOLD = 300
FLOOD_BATCH = 32


def _flood(socket_name: str, seconds: float) -> dict[str, int]:
    """Hold up to FLOOD_HOLD idle or half-sent connections, reopening those the server closes."""
    stats = {"connects": 0, "closed": 0, "errors": 0}
    held: dict[int, socket.socket] = {}
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        try:
            while time.monotonic() < deadline:
                for _ in range(min(FLOOD_BATCH, FLOOD_HOLD - len(held))):
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        sock.settimeout(1)
                        sock.connect(socket_name)
                        if stats["connects"] % 2:
                            sock.sendall(HALF_REQUEST)
                        sock.setblocking(False)
                    except OSError:
                        stats["errors"] += 1
                        sock.close()
                        continue
                    stats["connects"] += 1
                    held[sock.fileno()] = sock
                    selector.register(sock, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=0.02):
                    sock = held.pop(key.fd)
                    selector.unregister(sock)
                    sock.close()
                    stats["closed"] += 1
        finally:
            for sock in held.values():
                sock.close()
    return stats


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to flood as another uid")
def test_a_flood_from_another_uid_does_not_evict_a_slow_client(daemon: DaemonProcess) -> None:
    # Anyone may connect, as to a socket shared with a group; the tmp dirs above are 0700,
    # so the flooder connects by a name relative to the socket's dir.
    daemon.socket.parent.chmod(0o755)
    daemon.socket.chmod(0o666)
    nobody = pwd.getpwnam("nobody")
    before = fd_count(daemon.pid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.chdir(daemon.socket.parent)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write_end, json.dumps(_flood(daemon.socket.name, FLOOD_SECONDS)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        flood_started = time.monotonic()
        peak = wait_for(
            lambda: n if (n := fd_count(daemon.pid)) >= before + MAX_CONNECTIONS - 2 else None,
            5,
            "the flood to fill the cap",
        )
        request = b"GET /v1/status HTTP/1.1\r\nHost: sinagot\r\n\r\n"
        pieces = [request[i : i + 8] for i in range(0, len(request), 8)]
        pause = (REQUEST_TIMEOUT * 0.5) / len(pieces)
        latencies = []
        with connect(daemon.socket) as slow:
            for piece in pieces:
                slow.sendall(piece)
                latencies.append(timed_status(daemon))
                peak = max(peak, fd_count(daemon.pid))
                time.sleep(pause)
            answer = read_to_eof(slow, 3)
        assert time.monotonic() < flood_started + FLOOD_SECONDS, "the flood ended too soon"
    finally:
        with os.fdopen(read_end) as reader:
            report = reader.read()
        _, exit_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(exit_status) == 0
    stats = json.loads(report)
    after = wait_for(
        lambda: n if (n := fd_count(daemon.pid)) <= before + 2 else None,
        REQUEST_TIMEOUT + 5,
        "the daemon's fds back to its baseline",
    )
    logger.info(
        "flood %s; fds before %d, peak %d, after %d; status at most %.3f s",
        stats,
        before,
        peak,
        after,
        max(latencies),
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert stats["closed"] > MAX_CONNECTIONS, stats
    assert max(latencies) < STATUS_UNDER_ATTACK, latencies
    assert peak <= before + FD_LIMIT, (before, peak)
    assert "control socket: down to" in daemon.log_text()
    assert daemon.call("status")["pid"] == daemon.pid
    assert daemon.stop() == 0
