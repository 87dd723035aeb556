"""The admin endpoints: fault rules and request counters of a running emulator."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ._context import AppState
from ._faults import FaultRule

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
    return web.json_response(
        {"error": f"no admin route {request.method} {request.path}"}, status=404
    )


def _as_list(data: object) -> Iterable[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("fault rules must be a JSON list of objects")
    return data
