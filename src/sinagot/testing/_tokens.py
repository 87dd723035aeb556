"""The emulator's alias tokens: XNAT's ``/data/services/tokens`` and their store.

XNAT keeps alias tokens in its database: they outlive a restart, and changing the
user's password leaves them valid. Here they are rows of ``tokens.sqlite3`` in the
data directory. A token is an alias (a UUID) and a 64-character secret that stand
for a user name and password until ``estimatedExpirationTime``, ``aliasTokenTimeout``
seconds (XNAT's default: 2 days) after it was issued.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import string
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["ALIAS_FORMAT", "DEFAULT_ALIAS_TOKEN_TIMEOUT", "AliasToken", "TokenBook"]

#: XNAT's default ``aliasTokenTimeout``: 2 days.
DEFAULT_ALIAS_TOKEN_TIMEOUT = 2 * 24 * 3600.0
#: What XNAT takes for an alias (its ``AliasToken.isAliasFormat``): a UUID.
ALIAS_FORMAT = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")

_SECRET_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alias_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL UNIQUE, secret TEXT NOT NULL,
    user TEXT NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1);
"""


@dataclass(frozen=True, slots=True)
class AliasToken:
    id: int
    alias: str
    secret: str
    user: str
    created_ms: int
    expires_ms: int
    enabled: bool

    def valid_at(self, now_ms: int) -> bool:
        return self.enabled and now_ms < self.expires_ms

    def to_json(self) -> dict[str, Any]:
        """The token as XNAT's token service answers it."""
        return {
            "alias": self.alias,
            "secret": self.secret,
            "xdatUserId": self.user,
            "estimatedExpirationTime": self.expires_ms,
            "singleUse": False,
            "id": self.id,
            "enabled": self.enabled,
            "disabled": 0 if self.enabled else 1,
            "created": self.created_ms,
            "timestamp": self.created_ms,
        }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TokenBook:
    """The alias tokens of one data directory; thread-safe, like the store.

    Every token is also kept in memory, so checking a request's credentials never
    waits for SQLite; issuing and invalidating write through (call them in a thread).
    """

    def __init__(self, path: Path, timeout: float = DEFAULT_ALIAS_TOKEN_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)
        rows = self._db.execute("SELECT * FROM alias_tokens").fetchall()
        self._tokens = {row["alias"]: _token_of(row) for row in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def issue(self, user: str) -> AliasToken:
        """A new token for ``user``, valid for :attr:`timeout` seconds from now."""
        now = _now_ms()
        alias = str(uuid.uuid4())
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO alias_tokens (alias, secret, user, created_ms, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (alias, secret, user, now, now + round(self.timeout * 1000)),
            )
            row = self._db.execute(
                "SELECT * FROM alias_tokens WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            token = self._tokens[alias] = _token_of(row)
        return token

    def find(self, alias: str) -> AliasToken | None:
        return self._tokens.get(alias.lower())

    def user_of(self, alias: str, secret: str) -> str | None:
        """The user a live token stands for, if ``secret`` is its secret."""
        token = self.find(alias)
        if token is None or not token.valid_at(_now_ms()):
            return None
        if not secrets.compare_digest(token.secret.encode(), secret.encode()):
            return None
        return token.user

    def invalidate(self, alias: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE alias_tokens SET enabled = 0 WHERE alias = ?", (alias.lower(),)
            )
            token = self._tokens.get(alias.lower())
            if token is not None:
                self._tokens[token.alias] = replace(token, enabled=False)


def _token_of(row: sqlite3.Row) -> AliasToken:
    return AliasToken(
        id=row["id"],
        alias=row["alias"],
        secret=row["secret"],
        user=row["user"],
        created_ms=row["created_ms"],
        expires_ms=row["expires_ms"],
        enabled=bool(row["enabled"]),
    )
