"""The control socket: HTTP + JSON over a Unix socket, under ``/v1``.

Reads are open to whoever can connect (the socket is 0660 in a 0750 dir);
mutating calls need the daemon's uid, root, or membership of ``control_group``,
checked on the peer credentials (SO_PEERCRED) of the request's own connection.
Every failure becomes a JSON ``{"error": ...}`` answer: a request can never
take the daemon down.

Connections are bounded too, so that a stuck or hostile client (anyone who may
connect) cannot wear the daemon down or lock others out of ``sinagot status``:

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

aiohttp parses HTTP; the gate only wraps its protocol factory (see :class:`_Gate`).
"""

from __future__ import annotations

import asyncio
import enum
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aiohttp import hdrs, web

from .._version import __version__
from ..errors import ConfigError, DaemonError, SinagotError
from ._journal import JobState

if TYPE_CHECKING:
    from ._service import Daemon

__all__ = ["ControlServer", "PeerCredentials", "peer_credentials"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JOBS_LISTED = 10_000
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 128
# Connections the kernel queues until the daemon accepts them (capped by somaxconn): deep,
# so that a client waits out a flood rather than fail to connect (EAGAIN).
_LISTEN_BACKLOG = 1024
# Connections asyncio accepts at one time. Evicted sockets close a loop turn or two
# later, so the fds may briefly exceed the cap by a few of these batches.
ACCEPT_BATCH = 16
_CONNECT_PROBE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} (pid {self.pid})"


_PEER = web.RequestKey("peer", PeerCredentials)


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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


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


class _Phase(enum.Enum):
    WAITING = "waiting"  # the request is not complete yet
    HANDLING = "handling"  # the handler runs: neither timed nor evicted
    ANSWERED = "answered"  # the answer is on its way out


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped so that the gate sees it come and go."""

    __slots__ = ("_deadline", "_gate", "_inner", "_transport", "peer", "phase")

    def __init__(self, gate: _Gate, inner: asyncio.Protocol) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.peer: PeerCredentials | None = None
        self.phase = _Phase.WAITING

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


class _Gate:
    """Admits, times and evicts the control connections, by the policy of the module docstring.

    Everything runs in loop callbacks (accept, timers, middleware): no task of its own.
    """

    def __init__(self, request_timeout: float, max_connections: int) -> None:
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        # Insertion (accept) order: the first fitting one is the oldest.
        self._open: dict[_Connection, None] = {}
        self._per_uid: Counter[int | None] = Counter()
        # Counts of the current episode at the cap, logged when it ends.
        self._full = False
        self._evicted = 0
        self._refused = 0

    def admit(self, connection: _Connection) -> bool:
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

    def _victim(self) -> _Connection | None:
        candidates = [c for c in self._open if c.phase is _Phase.WAITING] or [
            c for c in self._open if c.phase is _Phase.ANSWERED
        ]
        if not candidates:
            return None
        # max() keeps the first of equals: on a tie, the uid of the oldest candidate.
        uid = max((c.uid for c in candidates), key=self._per_uid.__getitem__)
        return next(c for c in candidates if c.uid == uid)

    def handling(self, connection: _Connection) -> None:
        connection.phase = _Phase.HANDLING
        connection.disarm()

    def answered(self, connection: _Connection) -> None:
        connection.phase = _Phase.ANSWERED
        if connection in self._open:
            connection.arm(self.request_timeout)

    def expire(self, connection: _Connection) -> None:
        logger.debug(
            "closing the control connection of %s: %s after %.1f s",
            connection.peer or "an unknown peer",
            "no complete request" if connection.phase is _Phase.WAITING else "its answer not taken",
            self.request_timeout,
        )
        self._drop(connection)
        connection.abort()

    def release(self, connection: _Connection) -> None:
        self._drop(connection)

    def close(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
            connection.abort()

    def _drop(self, connection: _Connection) -> None:
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


class _GatedUnixSite(web.BaseSite):
    """aiohttp's UnixSite with every connection's protocol wrapped by the gate."""

    __slots__ = ("_gate", "_path")

    def __init__(self, runner: web.BaseRunner, path: Path, gate: _Gate) -> None:
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
                lambda: _Connection(gate, server()), sock=sock, backlog=self._backlog
            )
        except BaseException:
            sock.close()
            raise
        # asyncio uses one number for both the accept batch and listen(): deepen the
        # kernel's queue now that it has listened.
        sock.listen(_LISTEN_BACKLOG)


class ControlServer:
    """Serves the control API of one :class:`Daemon` on a Unix socket."""

    def __init__(self, daemon: Daemon, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None
        self._gate = _Gate(REQUEST_TIMEOUT, MAX_CONNECTIONS)

    async def start(self) -> None:
        group_id = _group_id(self.daemon.settings.control_group)
        try:
            await asyncio.to_thread(_prepare_dir, self.path.parent, group_id)
        except OSError as exc:
            raise DaemonError(
                f"cannot prepare the socket dir {self.path.parent}: {exc}; check [daemon] socket"
            ) from exc
        await asyncio.to_thread(_check_stale, self.path)
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await _GatedUnixSite(runner, self.path, self._gate).start()
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

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard, self._track], client_max_size=64 * 1024)
        app.on_response_prepare.append(self._close_after)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/jobs", self._jobs)
        app.router.add_get("/v1/jobs/{id}", self._job)
        app.router.add_post("/v1/jobs/{id}/retry", self._retry)
        app.router.add_post("/v1/poll", self._poll)
        app.router.add_post("/v1/pause", self._pause)
        app.router.add_post("/v1/resume", self._resume)
        app.router.add_post("/v1/reload", self._reload)
        app.router.add_get("/v1/metrics", self._metrics)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.method in _MUTATING:
                peer = self._peer(request)
                if peer is None or not may_control(peer, self.daemon.settings.control_group):
                    logger.warning("refused %s %s from %s", request.method, request.path, peer)
                    return _error(
                        403,
                        f"{peer or 'this client'} may not change the daemon: run as the daemon's "
                        "user or root, or join its [daemon] control_group",
                    )
                request[_PEER] = peer
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        except ConfigError as exc:
            return _error(422, str(exc))
        except SinagotError as exc:
            return _error(409, str(exc))
        except Exception as exc:
            logger.exception("control request %s %s failed", request.method, request.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        connection = None if transport is None else transport.get_protocol()
        if not isinstance(connection, _Connection):  # the peer is gone already
            return await handler(request)
        if request.body_exists:
            # Still under the connection's deadline, so a body that never comes is cut off.
            await request.read()
        self._gate.handling(connection)
        try:
            return await handler(request)
        finally:
            self._gate.answered(connection)

    @staticmethod
    async def _close_after(request: web.Request, response: web.StreamResponse) -> None:
        # aiohttp has chosen the Connection header by the time this hook runs.
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"

    @staticmethod
    def _peer(request: web.Request) -> PeerCredentials | None:
        transport = request.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return None
        try:
            return peer_credentials(sock)
        except OSError:
            return None

    @staticmethod
    def _job_id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise web.HTTPBadRequest(reason=f"job id {raw!r} is not a number")
        return int(raw)

    async def _status(self, request: web.Request) -> web.Response:
        daemon = self.daemon
        datasets = await daemon.dataset_statuses()
        return web.json_response(
            {
                "version": __version__,
                "pid": os.getpid(),
                "started": daemon.started,
                "uptime": time.time() - daemon.started,
                "paused": daemon.paused,
                "stopping": daemon.stopping,
                "workers": {"max": daemon.settings.max_concurrent_jobs, "busy": daemon.busy_jobs},
                "queued": daemon.queued_jobs,
                "datasets": [d.to_json() for d in datasets],
            }
        )

    async def _jobs(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = set(query) - {"state", "dataset", "limit"}
        if unknown:
            raise web.HTTPBadRequest(reason=f"unknown query parameter(s) {sorted(unknown)}")
        state = None
        if query.get("state"):
            try:
                state = JobState(query["state"])
            except ValueError:
                raise web.HTTPBadRequest(
                    reason=f"state {query['state']!r} is not one of {[str(s) for s in JobState]}"
                ) from None
        raw_limit = query.get("limit", "500")
        if not raw_limit.isdigit() or not 0 < int(raw_limit) <= MAX_JOBS_LISTED:
            raise web.HTTPBadRequest(reason=f"limit must be a number from 1 to {MAX_JOBS_LISTED}")
        jobs = await self.daemon.journal.jobs(
            state=state, dataset=query.get("dataset") or None, limit=int(raw_limit)
        )
        return web.json_response({"jobs": [job.to_json() for job in jobs]})

    async def _job(self, request: web.Request) -> web.Response:
        job_id = self._job_id(request)
        found = await self.daemon.job_detail(job_id)
        if found is None:
            raise web.HTTPNotFound(reason=f"no job {job_id}")
        detail, tail = found
        return web.json_response(
            {
                **detail.job.to_json(),
                "history": [t.to_json() for t in detail.history],
                "log_tail": list(tail),
            }
        )

    async def _retry(self, request: web.Request) -> web.Response:
        job_id = self._job_id(request)
        job = await self.daemon.retry(job_id, str(request[_PEER]))
        if job is None:
            raise web.HTTPNotFound(reason=f"no job {job_id}")
        return web.json_response(job.to_json())

    async def _poll(self, request: web.Request) -> web.Response:
        wanted = request.query.getall("dataset", [])
        unknown = set(wanted) - set(self.daemon.dataset_names())
        if unknown:
            raise web.HTTPNotFound(reason=f"no dataset {sorted(unknown)}")
        return web.json_response({"polling": self.daemon.poll_now(wanted or None)})

    async def _pause(self, request: web.Request) -> web.Response:
        self.daemon.pause()
        return web.json_response({"paused": True})

    async def _resume(self, request: web.Request) -> web.Response:
        self.daemon.resume()
        return web.json_response({"paused": False})

    async def _reload(self, request: web.Request) -> web.Response:
        datasets = await self.daemon.reload(f"requested by {request[_PEER]}")
        return web.json_response({"reloaded": True, "datasets": datasets})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=await render_metrics(self.daemon),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Format": "prometheus-0.0.4"},
        )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, doc: str, samples: Iterable[tuple[dict[str, str], float]]) -> str:
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        number = _number(value)
        lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")
    return "\n".join(lines)


async def render_metrics(daemon: Daemon) -> str:
    """The daemon's state in the Prometheus text exposition format (0.0.4)."""
    datasets = await daemon.dataset_statuses()
    polls = daemon.datasets_polls()
    families = [
        _family(
            "sinagot_info",
            "gauge",
            "Version of the running daemon.",
            [({"version": __version__}, 1)],
        ),
        _family(
            "sinagot_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            [({}, time.time() - daemon.started)],
        ),
        _family(
            "sinagot_paused", "gauge", "1 while new jobs are paused.", [({}, float(daemon.paused))]
        ),
        _family(
            "sinagot_jobs_running", "gauge", "Jobs being processed now.", [({}, daemon.busy_jobs)]
        ),
        _family(
            "sinagot_jobs_queued",
            "gauge",
            "Jobs claimed and waiting for a worker.",
            [({}, daemon.queued_jobs)],
        ),
        _family(
            "sinagot_jobs",
            "gauge",
            "Jobs in the journal by dataset and state.",
            [
                ({"dataset": d.name, "state": s}, n)
                for d in datasets
                for s, n in sorted(d.jobs.items())
            ],
        ),
        _family(
            "sinagot_dataset_up",
            "gauge",
            "1 when the last listing of the dataset succeeded.",
            [({"dataset": d.name}, float(d.health == "ok")) for d in datasets],
        ),
        _family(
            "sinagot_dataset_consecutive_failures",
            "gauge",
            "Listing failures in a row.",
            [({"dataset": d.name}, d.failures) for d in datasets],
        ),
        _family(
            "sinagot_dataset_last_poll_timestamp_seconds",
            "gauge",
            "When the last listing succeeded.",
            [({"dataset": d.name}, d.last_poll) for d in datasets if d.last_poll is not None],
        ),
        _family(
            "sinagot_polls_total",
            "counter",
            "Listings by outcome since the daemon started.",
            [
                ({"dataset": name, "outcome": o}, n)
                for name, counts in polls.items()
                for o, n in sorted(counts.items())
            ],
        ),
        _family(
            "sinagot_job_attempts_total",
            "counter",
            "Finished job attempts by outcome.",
            [({"dataset": ds, "outcome": o}, n) for (ds, o), n in sorted(daemon.completed.items())],
        ),
    ]
    return "\n".join(families) + "\n"
