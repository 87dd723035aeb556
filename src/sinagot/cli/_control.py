"""A client of the control socket (used by ``sinagot status`` and friends)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..daemon import client_socket_path
from ..errors import DaemonError, DaemonNotRunningError

__all__ = ["ControlClient"]

_TIMEOUT = 60.0


class ControlClient:
    """Talks to a running daemon over its Unix socket; every call is one request."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None) -> None:
        self.socket_path = Path(socket_path) if socket_path else client_socket_path()

    async def request(self, method: str, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        import aiohttp

        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(method, f"http://sinagot{path}", params=list(params)) as response,
            ):
                if response.content_type == "application/json":
                    body: Any = await response.json()
                else:
                    body = await response.text()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PermissionError):
                raise DaemonError(
                    f"permission denied on {self.socket_path}: run as the daemon's user or join "
                    "its [daemon] control_group"
                ) from exc
            raise self._not_running() from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DaemonError(
                f"the daemon on {self.socket_path} did not answer {method} {path}: "
                f"{type(exc).__name__} {exc}; check `journalctl -u sinagot`"
            ) from exc
        if status >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise DaemonError(message or f"the daemon answered {status} to {method} {path}")
        return body

    def _not_running(self) -> DaemonNotRunningError:
        return DaemonNotRunningError(
            f"no daemon answers on {self.socket_path}: start it with `sinagot daemon CONFIG` "
            "or `systemctl start sinagot`, or pass --socket"
        )

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/v1/status")
        return result

    async def jobs(
        self, *, state: str | None = None, dataset: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        params = [("state", state or ""), ("dataset", dataset or "")]
        if limit is not None:
            params.append(("limit", str(limit)))
        body = await self.request("GET", "/v1/jobs", [(k, v) for k, v in params if v])
        jobs: list[dict[str, Any]] = body["jobs"]
        return jobs

    async def job(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/v1/jobs/{job_id}")
        return result

    async def retry(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", f"/v1/jobs/{job_id}/retry")
        return result

    async def poll(self, datasets: Sequence[str] = ()) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/v1/poll", [("dataset", name) for name in datasets]
        )
        return result

    async def plan(self, datasets: Sequence[str] = ()) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET", "/v1/plan", [("dataset", name) for name in datasets]
        )
        return result

    async def pause(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/pause")
        return result

    async def resume(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/resume")
        return result

    async def reload(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/reload")
        return result

    async def metrics(self) -> str:
        result: str = await self.request("GET", "/v1/metrics")
        return result
