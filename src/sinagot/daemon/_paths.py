"""Where the daemon keeps its state and its control socket."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import platformdirs

__all__ = ["SOCKET_NAME", "client_socket_path", "socket_path", "state_dir"]

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


def socket_path(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ
) -> Path:
    """The control socket: explicit, else in ``$RUNTIME_DIRECTORY``, else the user runtime dir."""
    if explicit:
        return Path(explicit)
    runtime = _systemd_dir(env, "RUNTIME_DIRECTORY")
    if runtime is None:
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR platformdirs warns and falls back to /tmp/runtime-<uid>,
            # which is what we want; the warning would only confuse a CLI user.
            warnings.simplefilter("ignore")
            runtime = Path(platformdirs.user_runtime_dir(APP_NAME))
    return runtime / SOCKET_NAME


def client_socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """The socket a client talks to when none is given: the daemon's default, or the service's."""
    own = socket_path(None, env)
    if own.exists() or not SYSTEM_SOCKET.exists():
        return own
    return SYSTEM_SOCKET
