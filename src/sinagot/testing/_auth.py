"""Users, per-project access, alias tokens and JSESSION cookies of the emulator.

A user with access to every project is a site admin (it may create projects and
issue alias tokens for others). An alias token's alias and secret stand for its
user's name and password wherever those are checked.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._tokens import ALIAS_FORMAT, TokenBook

__all__ = ["Accounts", "AuthFailed", "parse_user_spec"]


class AuthFailed(Exception):
    """Credentials were given but are wrong, or the session is unknown or expired."""


def parse_user_spec(spec: str) -> tuple[str, str, frozenset[str] | None]:
    """``NAME:PASSWORD[:PROJ1,PROJ2]`` -> (name, password, projects or None for all)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"user spec {spec!r} is not NAME:PASSWORD[:PROJECT,...]")
    projects = None
    if len(parts) == 3:
        projects = frozenset(p for p in parts[2].split(",") if p)
    return parts[0], parts[1], projects


@dataclass(slots=True)
class Accounts:
    """Checks basic credentials and JSESSION ids; sessions expire after idle ``expiry`` s.

    ``tokens`` None: a server without the alias token service (an XNAT before 1.6.3).
    """

    passwords: Mapping[str, str]
    access: Mapping[str, frozenset[str] | None]
    expiry: float | None = None
    tokens: TokenBook | None = None
    _sessions: dict[str, tuple[str, float]] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def account_of(self, name: str, password: str) -> str | None:
        """The user that ``name`` and ``password`` log in as: the user's own name and
        password, or a live alias token's alias and secret; else None."""
        if self.tokens is not None and ALIAS_FORMAT.fullmatch(name):
            user = self.tokens.user_of(name, password)
            return user if user in self.passwords else None
        expected = self.passwords.get(name)
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            return None
        return name

    def is_admin(self, user: str) -> bool:
        return self.access.get(user) is None

    def check_basic(self, header: str) -> str:
        """The user of an ``Authorization: Basic`` header value, or AuthFailed."""
        try:
            decoded = base64.b64decode(header.split(" ", 1)[1], validate=True).decode()
        except (IndexError, binascii.Error, UnicodeDecodeError) as exc:
            raise AuthFailed("malformed basic credentials") from exc
        name, _, password = decoded.partition(":")
        user = self.account_of(name, password)
        if user is None:
            # An alias is no secret, but the message need not name a token at all.
            shown = "an alias token" if ALIAS_FORMAT.fullmatch(name) else f"user {name!r}"
            raise AuthFailed(f"bad credentials for {shown}")
        return user

    def open_session(self, user: str) -> str:
        token = secrets.token_hex(16).upper()
        now = time.monotonic()
        with self._lock:
            if self.expiry is not None:
                expiry = self.expiry
                for stale in [t for t, (_, used) in self._sessions.items() if now - used > expiry]:
                    del self._sessions[stale]
            self._sessions[token] = (user, now)
        return token

    def session_user(self, token: str) -> str | None:
        """The user of a live session (refreshing its idle timer), else None."""
        now = time.monotonic()
        with self._lock:
            found = self._sessions.get(token)
            if found is None:
                return None
            user, last_used = found
            if self.expiry is not None and now - last_used > self.expiry:
                del self._sessions[token]
                return None
            self._sessions[token] = (user, now)
            return user

    def close_session(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def may_access(self, user: str, project: str) -> bool:
        allowed = self.access.get(user)
        return allowed is None or project in allowed
