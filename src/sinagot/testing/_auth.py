"""Users, per-project access and JSESSION cookies of the emulator."""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    """Checks basic credentials and JSESSION ids; sessions expire after idle ``expiry`` s."""

    passwords: Mapping[str, str]
    access: Mapping[str, frozenset[str] | None]
    expiry: float | None = None
    _sessions: dict[str, tuple[str, float]] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def check_password(self, user: str, password: str) -> bool:
        expected = self.passwords.get(user)
        return expected is not None and secrets.compare_digest(expected, password)

    def check_basic(self, header: str) -> str:
        """The user of an ``Authorization: Basic`` header value, or AuthFailed."""
        try:
            decoded = base64.b64decode(header.split(" ", 1)[1], validate=True).decode()
        except (IndexError, binascii.Error, UnicodeDecodeError) as exc:
            raise AuthFailed("malformed basic credentials") from exc
        user, _, password = decoded.partition(":")
        if not self.check_password(user, password):
            raise AuthFailed(f"bad credentials for user {user!r}")
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
