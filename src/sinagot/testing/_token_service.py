"""XNAT's alias token service: ``/data/services/tokens/...``, as XNAT answers it.

- ``issue``: a new token for the user logged in; ``issue/user/{name}`` for another
  user, site admins only. The answer is the token as JSON (see
  :meth:`AliasToken.to_json`).
- ``validate/{alias}/{secret}``: ``{"valid": "<user>"}`` for a live token whose
  secret this is, else ``{}``.
- ``invalidate/{alias}/{secret}``: the token stops working; ``{"result": "OK"}``.

A user may validate and invalidate only their own tokens, a site admin any; an
unknown alias is 404. A server built without the service answers 404 on all of it.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ._auth import Accounts
from ._body import Reply, json_reply
from ._context import HttpError

__all__ = ["token_reply"]


async def token_reply(
    request: web.Request, accounts: Accounts, segments: list[str] | None, user: str
) -> Reply | None:
    """The answer of a token route for ``user``, or None for another path."""
    if segments is None or segments[:2] != ["services", "tokens"]:
        return None
    tokens = accounts.tokens
    if tokens is None:
        raise HttpError(404, f"no such route {request.path}: this server issues no alias tokens")
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"{request.method} is not supported on the token service: use GET")
    operation, arguments = segments[2:3], segments[3:]
    if operation == ["issue"] and (
        not arguments or (len(arguments) == 2 and arguments[0] == "user")
    ):
        owner = arguments[1] if arguments else user
        if owner != user and not accounts.is_admin(user):
            raise HttpError(403, "Only admins can work with alias tokens for other users.")
        if owner not in accounts.passwords:
            raise HttpError(400, f"An error occurred retrieving the user: {owner}")
        issued = await asyncio.to_thread(tokens.issue, owner)
        return json_reply(issued.to_json())
    if operation in (["validate"], ["invalidate"]) and len(arguments) == 2:
        alias, secret = arguments
        token = tokens.find(alias)
        if token is None:
            raise HttpError(404, f"Can't find an alias token with the alias {alias}")
        if token.user != user and not accounts.is_admin(user):
            raise HttpError(
                403,
                "Non-admin users can only request operations on alias tokens for their own account",
            )
        if operation == ["invalidate"]:
            await asyncio.to_thread(tokens.invalidate, alias)
            return json_reply({"result": "OK"})
        valid_for = tokens.user_of(alias, secret)
        return json_reply({} if valid_for is None else {"valid": valid_for})
    raise HttpError(
        404,
        f"no such token route {request.path}: use issue, issue/user/{{name}},"
        " validate/{alias}/{secret} or invalidate/{alias}/{secret}",
    )
