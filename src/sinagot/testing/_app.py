"""The aiohttp application: admin routes, counters and faults, login, then the XNAT routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import _files as files
from . import _objects as objects
from ._admin import ADMIN_PREFIX, admin
from ._body import Reply, send, text
from ._context import STATE, AppState, Call, HttpError
from ._dicom_dump import dicom_dump
from ._records import ConflictError, NotFoundError
from ._routes import Target, parse_path, split_prefix
from ._services import authenticate, login, service_reply
from ._token_service import token_reply
from ._upload import upload

__all__ = ["build_app"]

_MAX_SMALL_BODY = 1024 * 1024


def build_app(state: AppState) -> web.Application:
    # Uploads are streamed and not subject to this limit; it bounds the small bodies read
    # whole (login forms, admin JSON).
    app = web.Application(client_max_size=_MAX_SMALL_BODY)
    app[STATE] = state
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


async def _dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path.startswith(ADMIN_PREFIX):
        return await admin(request, state)
    segments = split_prefix(request.rel_url.raw_path)
    target = parse_path(segments) if segments is not None else None
    template = target.template if target is not None else _plain_template(request.path)
    state.injector.count_request(f"{request.method} {template}")
    # The request reaches the server (and takes its time) before any fault strikes.
    await state.pace.request_started()
    fault = state.injector.choose(request.method, request.path)
    if fault is not None and fault.kind == "latency":
        state.injector.count_fault(fault)
        await asyncio.sleep(fault.delay)
    if fault is not None and fault.kind == "status":
        state.injector.count_fault(fault)
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        reply = Reply(
            status=fault.status,
            body=f"injected fault: HTTP {fault.status}".encode(),
            content_type="text/plain",
            headers=headers,
        )
        return await send(request, reply, None, state.injector, state.pace)
    try:
        reply = await _handle(request, state, segments, target)
    except HttpError as exc:
        reply = text(exc.status, str(exc))
    except NotFoundError as exc:
        reply = text(404, f"not found: {exc}")
    except ConflictError as exc:
        reply = text(409, str(exc))
    return await send(request, reply, fault, state.injector, state.pace)


def _plain_template(path: str) -> str:
    if path.startswith("/xapi/schemas/"):
        return "/xapi/schemas/{schema}"
    return path


async def _handle(
    request: web.Request, state: AppState, segments: list[str] | None, target: Target | None
) -> Reply:
    path = request.path.rstrip("/") or "/"
    if path == "/" and "Authorization" not in request.headers:
        return text(200, "Sinagot XNAT emulator")
    if segments == ["services", "auth"] and request.method in ("PUT", "POST"):
        return await login(request, state.accounts)
    user, token = authenticate(request, state.accounts)
    opens_session = path == "/" or (segments == ["JSESSION"] and request.method != "DELETE")
    if token is not None or not opens_session:
        return await _handle_authenticated(request, state, segments, target, user, token)
    # Asking for a session with basic auth opens one, and so does the site's front page
    # (xnatpy logs in with an alias token there). Other basic-auth requests do not:
    # clients that ignore cookies would otherwise leave one session per request behind.
    token = state.accounts.open_session(user)
    reply = await _handle_authenticated(request, state, segments, target, user, token)
    headers = {**reply.headers, "Set-Cookie": f"JSESSIONID={token}; Path=/; HttpOnly"}
    return Reply(reply.status, reply.body, reply.content_type, headers)


async def _handle_authenticated(
    request: web.Request,
    state: AppState,
    segments: list[str] | None,
    target: Target | None,
    user: str,
    token: str | None,
) -> Reply:
    if request.path.rstrip("/") == "":
        return text(200, "Sinagot XNAT emulator")
    reply = service_reply(request, state.accounts, segments, user, token)
    if reply is None:
        reply = await token_reply(request, state.accounts, segments, user)
    if reply is None and segments == ["services", "dicomdump"]:
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{request.method} is not supported on the DICOM dump: use GET")
        reply = await dicom_dump(request, state, user)
    if reply is not None:
        return reply
    if target is None:
        raise HttpError(404, f"no such route {request.path}")
    method = request.method
    handler = _HANDLERS.get((target.kind, "GET" if method == "HEAD" else method))
    if handler is None:
        raise HttpError(405, f"{method} is not supported on {target.template}")
    return await handler(Call(request, state, target, user))


_Handler = Callable[[Call], Awaitable[Reply]]
_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("projects", "GET"): objects.list_projects,
    ("project", "GET"): objects.get_project,
    ("project", "PUT"): objects.put_project,
    ("subjects", "GET"): objects.list_subjects,
    ("subject", "GET"): objects.get_subject,
    ("subject", "PUT"): objects.put_subject,
    ("subject", "DELETE"): objects.delete_object,
    ("experiments", "GET"): objects.list_experiments,
    ("experiment", "GET"): objects.get_experiment,
    ("experiment", "PUT"): objects.put_experiment,
    ("experiment", "DELETE"): objects.delete_object,
    ("scans", "GET"): objects.list_scans,
    ("scan", "GET"): objects.get_scan,
    ("scan", "PUT"): objects.put_scan,
    ("scan", "DELETE"): objects.delete_object,
    ("resources", "GET"): files.list_resources,
    ("resource", "GET"): files.get_resource,
    ("resource", "PUT"): files.put_resource,
    ("resource", "POST"): files.put_resource,
    ("resource", "DELETE"): files.delete_resource,
    ("files", "GET"): files.list_files,
    ("files", "PUT"): upload,
    ("files", "POST"): upload,
    ("file", "GET"): files.get_file,
    ("file", "PUT"): upload,
    ("file", "POST"): upload,
    ("file", "DELETE"): files.delete_file,
    ("session_files", "GET"): files.session_files,
}
