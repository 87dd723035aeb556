"""XNAT alias tokens as the client sees them: what the token service answers, and when to renew.

A client exchanges the password (or an alias token it was given) for an alias token
of its own at login, logs in with that from then on, and replaces it at half its
lifetime, so a token is never used near its ``estimatedExpirationTime`` even by a
client whose clock differs from the server's: the lifetime is measured on the
server's clock (``estimatedExpirationTime - created``) and counted down on ours.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ISSUE_PATH", "IssuedToken", "is_alias", "parse_issued_token"]

ISSUE_PATH = "/data/services/tokens/issue"
# XNAT's alias format (AliasToken.isAliasFormat): a UUID. xnatpy tells tokens from
# user names the same way.
_ALIAS = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
# Renew at this fraction of the token's lifetime.
_RENEW_AT = 0.5


def is_alias(name: str) -> bool:
    """Whether ``name`` is an alias token's alias rather than a user name."""
    return _ALIAS.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token the service issued: its alias, secret, user and when to replace it."""

    alias: str
    secret: str = field(repr=False)
    user: str | None
    # time.monotonic() after which the token is to be replaced; None: it never expires.
    renew_at: float | None

    def due(self, now: float) -> bool:
        return self.renew_at is not None and now >= self.renew_at


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_issued_token(document: Any, now: float | None = None) -> IssuedToken | None:
    """The token in a token service's answer, or None if the answer holds none."""
    if not isinstance(document, dict):
        return None
    alias, secret = document.get("alias"), document.get("secret")
    if not isinstance(alias, str) or not is_alias(alias):
        return None
    if not isinstance(secret, str) or not secret or any(c in secret for c in ":\r\n"):
        return None
    user = document.get("xdatUserId")
    expires = _milliseconds(document.get("estimatedExpirationTime"))
    created = _milliseconds(document.get("created"))
    if created is None:
        created = _milliseconds(document.get("timestamp"))
    now = time.monotonic() if now is None else now
    renew_at = None
    if expires is not None:
        lifetime = (expires - (created if created is not None else time.time() * 1000)) / 1000
        renew_at = now + max(0.0, lifetime) * _RENEW_AT
    return IssuedToken(
        alias=alias,
        secret=secret,
        user=user if isinstance(user, str) and user else None,
        renew_at=renew_at,
    )
