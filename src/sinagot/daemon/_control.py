"""The control socket: the daemon's HTTP API (:mod:`._api`) on a Unix socket file.

The socket is 0660 in a 0750 dir, group ``control_group`` when set; its
connections pass the gate of :mod:`._gate`.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import ConfigError, DaemonError
from ._api import control_app
from ._gate import MAX_CONNECTIONS, REQUEST_TIMEOUT, ConnectionGate, GatedUnixSite

if TYPE_CHECKING:
    from ._view import DaemonControls

__all__ = ["ControlServer"]

logger = logging.getLogger(__name__)

_CONNECT_PROBE_TIMEOUT = 2.0


def _check_stale(path: Path) -> None:
    """Remove a stale socket file; refuse when another daemon still answers on it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise DaemonError(f"{path} exists and is not a socket: remove it or set [daemon] socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_CONNECT_PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        logger.info("removing the stale control socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise DaemonError(
            f"cannot check the control socket {path}: {exc}; remove it if no daemon runs"
        ) from exc
    finally:
        probe.close()
    raise DaemonError(
        f"another daemon answers on {path}: stop it first (`systemctl stop sinagot`) "
        "or give this one another [daemon] socket"
    )


def _prepare_dir(directory: Path, group_id: int | None) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o750)
    elif directory.stat().st_uid != os.getuid():
        # Not ours (e.g. /tmp): leave its mode alone, the socket's own mode still applies.
        return
    directory.chmod(0o750)
    if group_id is not None:
        os.chown(directory, -1, group_id)


def _group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(
            f"[daemon] control_group {name!r} does not exist: create it or remove the setting"
        ) from None


class ControlServer:
    """Serves the control API of one daemon on a Unix socket."""

    def __init__(self, daemon: DaemonControls, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None
        self._gate = ConnectionGate(REQUEST_TIMEOUT, MAX_CONNECTIONS)

    async def start(self) -> None:
        group_id = _group_id(self.daemon.settings.control_group)
        try:
            await asyncio.to_thread(_prepare_dir, self.path.parent, group_id)
        except OSError as exc:
            raise DaemonError(
                f"cannot prepare the socket dir {self.path.parent}: {exc}; check [daemon] socket"
            ) from exc
        await asyncio.to_thread(_check_stale, self.path)
        runner = web.AppRunner(
            control_app(self.daemon, self._gate), access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await GatedUnixSite(runner, self.path, self._gate).start()
            os.chmod(self.path, 0o660)
            if group_id is not None:
                os.chown(self.path, -1, group_id)
        except OSError as exc:
            await runner.cleanup()
            raise DaemonError(
                f"cannot listen on {self.path}: {exc}; check [daemon] socket"
            ) from exc
        self._inode = os.stat(self.path).st_ino
        self._runner = runner
        logger.info("control socket listening on %s", self.path)

    async def stop(self) -> None:
        if self._runner is None:
            return
        await self._runner.cleanup()
        self._runner = None
        # aiohttp closed what it knew; a connection still writing to a peer that does not
        # read would otherwise outlive the server.
        self._gate.close()
        # Only remove the file if it is still ours (a successor may have replaced it).
        try:
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
