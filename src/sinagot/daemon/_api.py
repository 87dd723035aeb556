"""The control API: HTTP + JSON handlers under ``/v1``, for the control socket.

Reads are open to whoever can connect (the socket is 0660 in a 0750 dir);
mutating calls need the daemon's uid, root, or membership of ``control_group``,
checked on the peer credentials (SO_PEERCRED) of the request's own connection.
Every failure becomes a JSON ``{"error": ...}`` answer: a request can never
take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web

from .._version import __version__
from ..errors import ConfigError, SinagotError
from ._gate import ConnectionGate, GatedConnection
from ._metrics import CONTENT_TYPE
from ._peers import PeerCredentials, may_control, peer_credentials
from ._states import JobState

if TYPE_CHECKING:
    from ._view import DaemonControls, DaemonView

__all__ = [
    "MAX_JOBS_LISTED",
    "control_app",
    "job_document",
    "job_id_of",
    "list_jobs",
    "status_document",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JOBS_LISTED = 10_000

_PEER = web.RequestKey("peer", PeerCredentials)


def _error(status: int, message: str) -> web.Response:
    # Messages quote the request's decoded path and query: a %0A there must not break the line.
    return web.json_response({"error": " ".join(message.split())}, status=status)


async def status_document(daemon: DaemonView) -> dict[str, Any]:
    """The daemon's status as the control API and the status page answer it."""
    datasets = await daemon.dataset_statuses()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started": daemon.started,
        "uptime": time.time() - daemon.started,
        "status": str(daemon.status),
        "paused": daemon.paused,
        "stopping": daemon.stopping,
        "workers": {"max": daemon.settings.max_concurrent_jobs, "busy": daemon.busy_jobs},
        "queued": daemon.queued_jobs,
        "metrics_url": daemon.metrics_url,
        "datasets": [d.to_json() for d in datasets],
        # Back-pressure: each server's pace, and why.
        "servers": [view.to_json() for view in daemon.server_paces()],
    }


async def list_jobs(daemon: DaemonView, query: Mapping[str, str]) -> list[dict[str, Any]]:
    """The jobs a query asks for (``state``, ``dataset``, ``session`` search, ``limit``);
    a bad query raises HTTPBadRequest naming the parameter."""
    unknown = set(query) - {"state", "dataset", "session", "limit"}
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
    jobs = await daemon.journal.jobs(
        state=state,
        dataset=query.get("dataset") or None,
        session=query.get("session") or None,
        limit=int(raw_limit),
    )
    return [job.to_json() for job in jobs]


def job_id_of(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(reason=f"job id {raw!r} is not a number")
    return int(raw)


async def job_document(daemon: DaemonView, job_id: int) -> dict[str, Any]:
    """One job with its history and log tail; HTTPNotFound when there is none."""
    found = await daemon.job_detail(job_id)
    if found is None:
        raise web.HTTPNotFound(reason=f"no job {job_id}")
    detail, tail = found
    return {
        **detail.job.to_json(),
        "history": [t.to_json() for t in detail.history],
        "log_tail": list(tail),
    }


def control_app(daemon: DaemonControls, gate: ConnectionGate) -> web.Application:
    """The aiohttp application of the control API; ``gate`` sees each request handled."""
    return _Api(daemon, gate).app()


class _Api:
    def __init__(self, daemon: DaemonControls, gate: ConnectionGate) -> None:
        self.daemon = daemon
        self._gate = gate

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard, self._track], client_max_size=64 * 1024)
        app.on_response_prepare.append(self._close_after)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/jobs", self._jobs)
        app.router.add_get("/v1/jobs/{id}", self._job)
        app.router.add_post("/v1/jobs/{id}/retry", self._retry)
        app.router.add_get("/v1/plan", self._plan)
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
        if not isinstance(connection, GatedConnection):  # the peer is gone already
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

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await status_document(self.daemon))

    async def _jobs(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": await list_jobs(self.daemon, request.query)})

    async def _job(self, request: web.Request) -> web.Response:
        return web.json_response(await job_document(self.daemon, job_id_of(request)))

    async def _retry(self, request: web.Request) -> web.Response:
        job_id = job_id_of(request)
        job = await self.daemon.retry(job_id, str(request[_PEER]))
        if job is None:
            raise web.HTTPNotFound(reason=f"no job {job_id}")
        return web.json_response(job.to_json())

    def _datasets(self, request: web.Request) -> list[str]:
        """The datasets a request names (``?dataset=`` repeated; none: all); 404 if unknown."""
        unknown_query = set(request.query) - {"dataset"}
        if unknown_query:
            raise web.HTTPBadRequest(reason=f"unknown query parameter(s) {sorted(unknown_query)}")
        wanted = request.query.getall("dataset", [])
        unknown = set(wanted) - set(self.daemon.dataset_names())
        if unknown:
            raise web.HTTPNotFound(reason=f"no dataset {sorted(unknown)}")
        return wanted

    async def _plan(self, request: web.Request) -> web.Response:
        wanted = self._datasets(request)
        plans = await self.daemon.plan(wanted or None)
        return web.json_response({"datasets": {n: p.to_json() for n, p in plans.items()}})

    async def _poll(self, request: web.Request) -> web.Response:
        wanted = self._datasets(request)
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
        body = await self.daemon.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
