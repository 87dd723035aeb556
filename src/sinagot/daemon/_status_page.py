"""The status page: a read-only view of the daemon in a browser, beside ``/metrics``.

``GET /`` serves one page and its own script and style (no CDN: it works offline),
which read ``/api/status``, ``/api/jobs`` and ``/api/jobs/{id}`` and draw them again
every few seconds without reloading. The page changes nothing: there are only GET
routes, and the control API stays on the Unix socket, where peers are known.

What a server or a script wrote (labels, error messages, log lines) reaches the page
as JSON and is put into the page as text, never as markup; the Content-Security-Policy
allows no inline script in any case. Requests whose ``Host`` is a name other than this
machine's are refused, so that a web page in the operator's browser cannot read the
page through a DNS name it points at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .._report import StepKey
from ..connectors import derivative_path, derivative_urls
from ._api import job_document, job_id_of, list_jobs, status_document
from ._states import JobState

if TYPE_CHECKING:
    from ..config import Settings
    from ._view import DaemonView

__all__ = ["add_status_page", "banners", "derivative_links"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The page, its script and its style, by the name the page asks for.
_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Links to the XNAT server do not tell it where the operator came from.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("page", name).read_bytes()


def _own_names(bind_host: str) -> frozenset[str]:
    names = {"localhost", bind_host.lower()}
    for name in (socket.gethostname(), socket.getfqdn()):
        names.add(name.lower())
    return frozenset(names)


def _host_allowed(host: str | None, own: frozenset[str]) -> bool:
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name in own
    return True


def banners(status: dict[str, Any]) -> list[dict[str, str]]:
    """What the page shows above everything (kind, text), from the status document.

    A new banner is one more entry here (the page shows every kind the same way).
    """
    shown = []
    if status["stopping"]:
        shown.append({"kind": "stopping", "text": "The daemon is stopping."})
    if status["paused"]:
        shown.append(
            {
                "kind": "paused",
                "text": "Paused: no new job starts until sinagot resume; running jobs finish.",
            }
        )
    down = [d["name"] for d in status["datasets"] if d["health"] == "down"]
    if down:
        shown.append(
            {"kind": "down", "text": f"Server not answering for: {', '.join(sorted(down))}."}
        )
    stale = [
        f"{d['name']} ({d['pipeline']['sessions']})"
        for d in status["datasets"]
        if d["pipeline"]["sessions"]
    ]
    if stale:
        shown.append(
            {
                "kind": "stale",
                "text": "The pipeline changed: sessions to process again, after new ones:"
                f" {', '.join(stale)}.",
            }
        )
    return shown


def derivative_links(settings: Settings, session: str) -> list[dict[str, str]]:
    """Links to the derivatives the config defines for ``session`` on its XNAT server
    (those whose inputs the session lacks are absent there), and their provenance."""
    store = settings.store
    if store.type != "xnat" or not store.server or not store.project:
        return []
    links = []
    for task in settings.tasks.values():
        for modality in task.modalities:
            for script in settings.modalities[modality].scripts_for(task.name):
                path = derivative_path(
                    StepKey(session, task.name, modality, script).name, store.pipeline
                )
                files, provenance = derivative_urls(store.server, store.project, session, path)
                links.append({"derivative": path, "files": files, "provenance": provenance})
    return links


class _Page:
    def __init__(self, daemon: DaemonView, own_names: frozenset[str]) -> None:
        self.daemon = daemon
        self._own = own_names

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/metrics":
            return await handler(request)
        if not _host_allowed(request.host, self._own):
            logger.warning("status page: refused a request for host %r", request.host)
            return web.Response(
                status=421,
                text="this address is not the daemon's: open the page by IP or this host's name",
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or not request.path.startswith("/api/"):
                raise
            response = web.json_response({"error": exc.reason}, status=exc.status)
        response.headers.update(_HEADERS)
        return response

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        kind = _ASSETS.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name), content_type=kind, charset="utf-8")

    async def status(self, request: web.Request) -> web.Response:
        document = await status_document(self.daemon)
        document["banners"] = banners(document)
        document["states"] = [str(state) for state in JobState]
        return web.json_response(document)

    async def jobs(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": await list_jobs(self.daemon, request.query)})

    async def job(self, request: web.Request) -> web.Response:
        document = await job_document(self.daemon, job_id_of(request))
        settings = self.daemon.dataset_settings_of(document["dataset"])
        document["links"] = (
            [] if settings is None else derivative_links(settings, document["session"])
        )
        return web.json_response(document)


def add_status_page(app: web.Application, daemon: DaemonView, bind_host: str) -> None:
    """Add the page and its read-only API to ``app`` (the metrics listener's)."""
    page = _Page(daemon, _own_names(bind_host))
    app.middlewares.append(page.guard)
    app.router.add_get("/", page.asset)
    app.router.add_get("/assets/{name}", page.asset)
    app.router.add_get("/api/status", page.status)
    app.router.add_get("/api/jobs", page.jobs)
    app.router.add_get(r"/api/jobs/{id}", page.job)
