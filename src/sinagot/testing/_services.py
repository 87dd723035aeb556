"""XNAT's service routes: login, sessions, and what xnatpy asks for when it connects.

xnatpy logs in with a form and then sends only the cookie; pyxnat sends basic
auth on every request (and the cookie once it has one). Both are accepted
everywhere.
"""

from __future__ import annotations

from aiohttp import web

from ._auth import Accounts, AuthFailed
from ._body import Reply, json_reply, text
from ._context import HttpError
from ._xsd import XNAT_XSD

__all__ = ["authenticate", "login", "service_reply"]


async def login(request: web.Request, accounts: Accounts) -> Reply:
    """``PUT /data/services/auth`` with a form: the body is the new session's id."""
    form = await request.post()
    user = accounts.account_of(str(form.get("username", "")), str(form.get("password", "")))
    if user is None:
        return text(401, "Login attempt failed. Please try again.")
    token = accounts.open_session(user)
    return Reply(
        body=token.encode(),
        content_type="text/plain",
        headers={"Set-Cookie": f"JSESSIONID={token}; Path=/; HttpOnly"},
    )


def authenticate(request: web.Request, accounts: Accounts) -> tuple[str, str | None]:
    """(user, live session token or None); raises 401 for bad or missing credentials."""
    token = request.cookies.get("JSESSIONID")
    session_user = accounts.session_user(token) if token else None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user = accounts.check_basic(header)
        except AuthFailed as exc:
            raise HttpError(401, f"{exc}: check the user name and password") from exc
        return user, token if session_user == user else None
    if session_user is None:
        raise HttpError(401, "no valid credentials or session: log in again")
    return session_user, token


def service_reply(
    request: web.Request,
    accounts: Accounts,
    segments: list[str] | None,
    user: str,
    token: str | None,
) -> Reply | None:
    """The answer of a service route for ``user``, or None for a path of the REST objects."""
    method = request.method
    if segments == ["JSESSION"]:
        if method == "DELETE":
            if token is not None:
                accounts.close_session(token)
            return text(200, "")
        assert token is not None  # opened by the caller for GET/POST
        return text(200, token)
    if segments == ["auth"]:
        return text(200, f"User '{user}' is logged in")
    if segments == ["search", "elements"]:
        return json_reply({"ResultSet": {"Result": [], "totalRecords": "0"}})
    path = request.path.rstrip("/")
    if path == "/xapi/siteConfig/buildInfo":
        return json_reply({"version": "1.8.10", "buildNumber": "sinagot-emulator"})
    if path == "/xapi/schemas":
        return json_reply(["xnat"])
    if path == "/xapi/schemas/xnat":
        return Reply(body=XNAT_XSD.encode(), content_type="text/xml")
    return None
