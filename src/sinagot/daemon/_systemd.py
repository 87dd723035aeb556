"""The two things systemd asks of a service: sd_notify messages and journald-friendly logs."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import MutableMapping
from typing import TextIO

__all__ = ["Notifier", "configure_logging", "stderr_is_journal"]

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to ``$NOTIFY_SOCKET``; does nothing when it is not set.

    Like ``sd_notify(unset_environment=1)``, the variables are removed from the
    environment so that child processes (Dask workers) do not talk to systemd.
    """

    def __init__(self, env: MutableMapping[str, str] = os.environ) -> None:
        address = env.pop("NOTIFY_SOCKET", "")
        watchdog_usec = env.pop("WATCHDOG_USEC", "")
        watchdog_pid = env.pop("WATCHDOG_PID", "")
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address.startswith("@"):
            # An abstract socket: the name starts with a NUL byte instead of '@'.
            address = "\0" + address[1:]
        if address:
            self._address = address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        self.watchdog_interval: float | None = None
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        if for_us and watchdog_usec.isdigit() and int(watchdog_usec) > 0:
            # systemd recommends pinging at half the timeout.
            self.watchdog_interval = int(watchdog_usec) / 2e6

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # systemd being away or busy must never take the daemon down.
            logger.debug("sd_notify %s failed: %s", lines, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def stderr_is_journal(
    stream: TextIO = sys.stderr, env: MutableMapping[str, str] = os.environ
) -> bool:
    """True when ``$JOURNAL_STREAM`` names the very file behind ``stream``."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return stat.st_dev == int(dev) and stat.st_ino == int(ino)


_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _OneLineFormatter(logging.Formatter):
    """One line per event; with ``journal``, a ``<N>`` syslog priority prefix instead of a time."""

    def __init__(self, journal: bool) -> None:
        fmt = (
            "%(name)s: %(message)s"
            if journal
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\r", "").replace("\n", " | ")
        if self._journal:
            return f"<{_PRIORITIES.get(record.levelno, 6)}>{text}"
        return text


def configure_logging(level: str, stream: TextIO = sys.stderr) -> None:
    """Send every log record to ``stream``, one line each, journald-aware."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLineFormatter(stderr_is_journal(stream)))
    logging.basicConfig(level=level, handlers=[handler], force=True)
