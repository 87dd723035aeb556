"""``/metrics`` over TCP for a Prometheus server, and the status page: ``[daemon] metrics_address``.

The listener reads only: the metrics, and the status page (:mod:`._status_page`) with
its read-only API; the control API stays on the Unix socket, where peers are known.
It has no authentication, so the config keeps it on loopback unless
``metrics_allow_remote`` says otherwise.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import DaemonError
from ._metrics import CONTENT_TYPE
from ._status_page import add_status_page

if TYPE_CHECKING:
    from ._view import DaemonView

__all__ = ["MetricsServer"]

logger = logging.getLogger(__name__)


class MetricsServer:
    """Serves ``GET /metrics`` of ``daemon`` and its status page on ``host:port`` (port 0:
    a free one)."""

    def __init__(self, daemon: DaemonView, host: str, port: int) -> None:
        self._daemon = daemon
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self.page_url: str | None = None

    async def _serve(self, request: web.Request) -> web.Response:
        body = await self._daemon.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def start(self) -> None:
        app = web.Application(client_max_size=4096)
        app.router.add_get("/metrics", self._serve)
        add_status_page(app, self._daemon, self._host)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise DaemonError(
                f"cannot serve metrics on {self._host}:{self._port}: {exc.strerror or exc};"
                " choose another [daemon] metrics_address"
            ) from exc
        self._runner = runner
        port = runner.addresses[0][1]  # the one picked, for port 0
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.page_url = f"http://{host}:{port}/"
        self.url = f"{self.page_url}metrics"
        logger.info("metrics served on %s, the status page on %s", self.url, self.page_url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
