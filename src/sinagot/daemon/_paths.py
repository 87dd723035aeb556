"""Where the daemon keeps its state and its control socket."""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import platformdirs

from ..errors import DaemonError

__all__ = [
    "SOCKET_NAME",
    "StateLock",
    "client_socket_path",
    "lock_state_dir",
    "socket_path",
    "state_dir",
]

APP_NAME = "sinagot"
SOCKET_NAME = "sinagot.sock"
# The socket of the system service (RuntimeDirectory=sinagot in systemd/sinagot.service).
SYSTEM_SOCKET = Path("/run/sinagot") / SOCKET_NAME


def _systemd_dir(env: Mapping[str, str], name: str) -> Path | None:
    # systemd sets a colon-separated list when a unit declares several directories.
    value = env.get(name, "")
    first = value.split(":", 1)[0]
    return Path(first) if first else None


def state_dir(explicit: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Path:
    """The journal's directory: explicit, else ``$STATE_DIRECTORY``, else the user state dir."""
    if explicit:
        return Path(explicit)
    return _systemd_dir(env, "STATE_DIRECTORY") or Path(platformdirs.user_state_dir(APP_NAME))


class StateLock:
    """The exclusive lock of a state dir, held until :meth:`close`."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle

    def close(self) -> None:
        self._handle.close()


def lock_state_dir(path: Path) -> StateLock:
    """Hold an exclusive lock on the state dir: two daemons must never share a journal."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        handle = (path / "daemon.lock").open("a")
    except OSError as exc:
        raise DaemonError(
            f"cannot use the state dir {path}: {exc}; check [daemon] state_dir"
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise DaemonError(
            f"another daemon already uses the state dir {path}: stop it or set another "
            "[daemon] state_dir"
        ) from exc
    return StateLock(handle)


def socket_path(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ
) -> Path:
    """The control socket: explicit, else in ``$RUNTIME_DIRECTORY``, else the user runtime dir.

    Raises :class:`~sinagot.errors.DaemonError` when there is no usable user runtime dir.
    """
    if explicit:
        return Path(explicit)
    runtime = _systemd_dir(env, "RUNTIME_DIRECTORY")
    if runtime is None:
        runtime = _user_runtime_dir()
    return runtime / SOCKET_NAME


def _user_runtime_dir() -> Path:
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR platformdirs warns and falls back to /tmp/runtime-<uid>,
        # which is what we want; the warning would only confuse a CLI user.
        warnings.simplefilter("ignore")
        try:
            return Path(platformdirs.user_runtime_dir(APP_NAME))
        except OSError as exc:
            # The /tmp fallback is refused when it is another user's, a symlink or not a directory.
            # platformdirs' own advice ends the message; ours names every way out Sinagot has.
            problem = str(exc).split(";", 1)[0]
            raise DaemonError(
                f"no usable runtime directory for the control socket: {problem}; set "
                "XDG_RUNTIME_DIR to a directory you own with mode 0700, or name the socket "
                "([daemon] socket in the config, --socket for the clients)"
            ) from exc


def client_socket_path(
    env: Mapping[str, str] = os.environ, system_socket: Path = SYSTEM_SOCKET
) -> Path:
    """The socket a client talks to when none is given: the daemon's default, or the service's.

    ``system_socket`` is the system service's socket; a client with no usable runtime dir of
    its own falls back to it too.
    """
    try:
        own = socket_path(None, env)
    except DaemonError:
        if system_socket.exists():
            return system_socket
        raise
    if own.exists() or not system_socket.exists():
        return own
    return system_socket
