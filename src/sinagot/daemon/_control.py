"""The control socket: HTTP + JSON over a Unix socket, under ``/v1``.

Reads are open to whoever can connect (the socket is 0660 in a 0750 dir);
mutating calls need the daemon's uid, root, or membership of ``control_group``,
checked on the peer credentials (SO_PEERCRED) of the request's own connection.
Every failure becomes a JSON ``{"error": ...}`` answer: a request can never
take the daemon down.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from ..errors import ConfigError, DaemonError, SinagotError
from ._journal import JobState

if TYPE_CHECKING:
    from ._service import Daemon

__all__ = ["ControlServer", "PeerCredentials", "peer_credentials"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JOBS_LISTED = 10_000
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


class ControlServer:
    """Serves the control API of one :class:`Daemon` on a Unix socket."""

    def __init__(self, daemon: Daemon, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None

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
            await web.UnixSite(runner, str(self.path)).start()
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
        # Only remove the file if it is still ours (a successor may have replaced it).
        try:
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
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
