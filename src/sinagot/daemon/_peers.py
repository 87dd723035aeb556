"""Who is at the other end of a control connection, and whether they may change the daemon."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["PeerCredentials", "may_control", "peer_credentials"]


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} (pid {self.pid})"


def peer_credentials(sock: Any) -> PeerCredentials:
    """The pid, uid and gid of the process at the other end of a Unix stream socket."""
    size = struct.calcsize("3i")
    pid, uid, gid = struct.unpack(
        "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    )
    return PeerCredentials(pid, uid, gid)


def _peer_groups(pid: int) -> set[int]:
    # Supplementary groups of the peer as the kernel has them (PAM may add some that
    # the group database does not list).
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def may_control(peer: PeerCredentials, control_group: str | None) -> bool:
    if peer.uid in (0, os.getuid()):
        return True
    if not control_group:
        return False
    try:
        group = grp.getgrnam(control_group)
    except KeyError:
        return False
    if peer.gid == group.gr_gid or group.gr_gid in _peer_groups(peer.pid):
        return True
    try:
        user = pwd.getpwuid(peer.uid).pw_name
    except KeyError:
        return False
    return user in group.gr_mem
