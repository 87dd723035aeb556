"""The gate of the control socket: bounds its connections so no client can wear it down.

A stuck or hostile client (anyone who may connect) must not wear the daemon down
or lock others out of ``sinagot status``:

- A client has :data:`REQUEST_TIMEOUT` seconds from connecting to send its whole
  request (headers and any body), and once answered as long again to read the
  answer; then the daemon closes the connection. Only the handler's own work is
  not timed.
- Every answer closes its connection (``Connection: close``): nothing idles
  between requests.
- At most :data:`MAX_CONNECTIONS` are open. A connection arriving at the cap
  makes room by closing one that is not being handled: of those that have not
  completed a request (else of those still writing their answer), one of the uid
  holding the most connections, its oldest. A flood thus evicts its own
  connections: a client of another uid is not evicted while the flooder holds
  more, and one of the same uid has until about :data:`MAX_CONNECTIONS` newer
  connections arrive to send its request. When every connection is being
  handled, the newcomer is closed instead.

aiohttp parses HTTP; the gate only wraps its protocol factory (see :class:`ConnectionGate`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections import Counter
from pathlib import Path
from typing import cast

from aiohttp import web

from ._peers import PeerCredentials, peer_credentials

__all__ = [
    "ACCEPT_BATCH",
    "MAX_CONNECTIONS",
    "REQUEST_TIMEOUT",
    "ConnectionGate",
    "GatedConnection",
    "GatedUnixSite",
]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 128
# Connections the kernel queues until the daemon accepts them (capped by somaxconn): deep,
# so that a client waits out a flood rather than fail to connect (EAGAIN).
_LISTEN_BACKLOG = 1024
# Connections asyncio accepts at one time. Evicted sockets close a loop turn or two
# later, so the fds may briefly exceed the cap by a few of these batches.
ACCEPT_BATCH = 16


class _Stage(enum.Enum):
    WAITING = "waiting"  # the request is not complete yet
    HANDLING = "handling"  # the handler runs: neither timed nor evicted
    ANSWERED = "answered"  # the answer is on its way out


class GatedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped so that the gate sees it come and go."""

    __slots__ = ("_deadline", "_gate", "_inner", "_transport", "peer", "stage")

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.peer: PeerCredentials | None = None
        self.stage = _Stage.WAITING

    @property
    def uid(self) -> int | None:
        return None if self.peer is None else self.peer.uid

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream server makes stream transports
        sock = stream.get_extra_info("socket")
        try:
            self.peer = None if sock is None else peer_credentials(sock)
        except OSError:
            self.peer = None
        if self._gate.admit(self):
            self._transport = stream
            self._inner.connection_made(stream)
        else:
            stream.abort()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:  # refused before aiohttp saw it
            return
        self._gate.release(self)
        self._inner.connection_lost(exc)

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._gate.expire, self)

    def disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def abort(self) -> None:
        self.disarm()
        if self._transport is not None:
            self._transport.abort()


class ConnectionGate:
    """Admits, times and evicts the control connections, by the policy of the module docstring.

    Everything runs in loop callbacks (accept, timers, middleware): no task of its own.
    """

    def __init__(self, request_timeout: float, max_connections: int) -> None:
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        # Insertion (accept) order: the first fitting one is the oldest.
        self._open: dict[GatedConnection, None] = {}
        self._per_uid: Counter[int | None] = Counter()
        # Counts of the current episode at the cap, logged when it ends.
        self._full = False
        self._evicted = 0
        self._refused = 0

    def admit(self, connection: GatedConnection) -> bool:
        if len(self._open) >= self.max_connections:
            if not self._full:
                self._full = True
                top = max(self._per_uid, key=self._per_uid.__getitem__)
                logger.warning(
                    "control socket: %d connections open, the cap; closing the oldest that "
                    "have sent no complete request, from the uid holding the most first "
                    "(uid %s holds %d)",
                    len(self._open),
                    top,
                    self._per_uid[top],
                )
            victim = self._victim()
            if victim is None:
                self._refused += 1
                return False
            self._evicted += 1
            self._drop(victim)
            victim.abort()
        self._open[connection] = None
        self._per_uid[connection.uid] += 1
        connection.arm(self.request_timeout)
        return True

    def _victim(self) -> GatedConnection | None:
        candidates = [c for c in self._open if c.stage is _Stage.WAITING] or [
            c for c in self._open if c.stage is _Stage.ANSWERED
        ]
        if not candidates:
            return None
        # max() keeps the first of equals: on a tie, the uid of the oldest candidate.
        uid = max((c.uid for c in candidates), key=self._per_uid.__getitem__)
        return next(c for c in candidates if c.uid == uid)

    def handling(self, connection: GatedConnection) -> None:
        connection.stage = _Stage.HANDLING
        connection.disarm()

    def answered(self, connection: GatedConnection) -> None:
        connection.stage = _Stage.ANSWERED
        if connection in self._open:
            connection.arm(self.request_timeout)

    def expire(self, connection: GatedConnection) -> None:
        logger.debug(
            "closing the control connection of %s: %s after %.1f s",
            connection.peer or "an unknown peer",
            "no complete request" if connection.stage is _Stage.WAITING else "its answer not taken",
            self.request_timeout,
        )
        self._drop(connection)
        connection.abort()

    def release(self, connection: GatedConnection) -> None:
        self._drop(connection)

    def close(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
            connection.abort()

    def _drop(self, connection: GatedConnection) -> None:
        if self._open.pop(connection, False) is False:
            return
        connection.disarm()
        self._per_uid[connection.uid] -= 1
        if not self._per_uid[connection.uid]:
            del self._per_uid[connection.uid]
        if self._full and len(self._open) <= self.max_connections // 2:
            logger.info(
                "control socket: down to %d connection(s); %d evicted and %d refused at the cap",
                len(self._open),
                self._evicted,
                self._refused,
            )
            self._full = False
            self._evicted = self._refused = 0


class GatedUnixSite(web.BaseSite):
    """aiohttp's UnixSite with every connection's protocol wrapped by the gate."""

    __slots__ = ("_gate", "_path")

    def __init__(self, runner: web.BaseRunner, path: Path, gate: ConnectionGate) -> None:
        super().__init__(runner, backlog=ACCEPT_BATCH)
        self._path = path
        self._gate = gate

    @property
    def name(self) -> str:
        return f"http://unix:{self._path}:"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        gate = self._gate
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self._path))
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: GatedConnection(gate, server()), sock=sock, backlog=self._backlog
            )
        except BaseException:
            sock.close()
            raise
        # asyncio uses one number for both the accept batch and listen(): deepen the
        # kernel's queue now that it has listened.
        sock.listen(_LISTEN_BACKLOG)
