"""The admin endpoints: fault rules, request counters, profile and checksum settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ._context import AppState
from ._faults import FaultRule
from ._profile import as_profile
from ._records import NotFoundError

__all__ = ["ADMIN_PREFIX", "admin"]

ADMIN_PREFIX = "/_emulator/"


async def admin(request: web.Request, state: AppState) -> web.StreamResponse:
    """Fault and counter control; not counted, no auth (the emulator is a loopback test tool)."""
    route = (request.method, request.path.rstrip("/"))
    injector = state.injector
    if route == ("GET", "/_emulator/faults"):
        return web.json_response(
            {"seed": injector.seed, "rules": [r.to_json() for r in injector.rules()]}
        )
    if route == ("POST", "/_emulator/faults"):
        try:
            payload = await request.json()
            rules_data = payload.get("rules", []) if isinstance(payload, dict) else payload
            rules = [FaultRule.from_json(item) for item in _as_list(rules_data)]
            seed = payload.get("seed") if isinstance(payload, dict) else None
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        injector.set_rules(rules, seed)
        return web.json_response({"seed": injector.seed, "rules": [r.to_json() for r in rules]})
    if route == ("GET", "/_emulator/counters"):
        return web.json_response(
            {"requests": injector.request_counts(), "faults": injector.fault_counts()}
        )
    if route == ("POST", "/_emulator/counters/reset"):
        injector.reset_counters()
        return web.json_response({"requests": {}, "faults": {}})
    if route[1] == "/_emulator/profile" and request.method in ("GET", "POST"):
        if request.method == "POST":
            try:
                payload = await request.json()
                profile = payload if isinstance(payload, str) else _as_object(payload)
                state.pace.profile = as_profile(profile)
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(state.pace.profile.to_json())
    if route[1] == "/_emulator/checksums" and request.method in ("GET", "POST"):
        if request.method == "POST":
            try:
                await _set_checksums(state, _as_object(await request.json()))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            except NotFoundError as exc:
                return web.json_response({"error": str(exc)}, status=404)
        return web.json_response(await asyncio.to_thread(_checksums, state))
    return web.json_response(
        {"error": f"no admin route {request.method} {request.path}"}, status=404
    )


def _as_list(data: object) -> Iterable[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("fault rules must be a JSON list of objects")
    return data


def _as_object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("give a JSON object")
    return data


async def _set_checksums(state: AppState, payload: dict[str, Any]) -> None:
    """``{"enabled": bool}`` for the site, with ``"project": ID`` for one project."""
    enabled = payload.get("enabled")
    project = payload.get("project")
    if not isinstance(enabled, bool) or not isinstance(project, str | None):
        raise ValueError('give {"enabled": true|false} and optionally "project": "ID"')
    await asyncio.to_thread(state.store.set_checksums, enabled, project)


def _checksums(state: AppState) -> dict[str, Any]:
    store = state.store
    return {"site": store.checksums, "projects": {p.id: p.checksums for p in store.projects()}}
