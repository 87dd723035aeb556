"""Where the XNAT password comes from: config, environment, or ``~/.netrc``."""

from __future__ import annotations

import logging
import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = ["PASSWORD_ENV", "Credentials", "resolve_credentials"]

PASSWORD_ENV = "SINAGOT_XNAT_PASSWORD"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password; the password never appears in ``repr``."""

    user: str
    password: str = field(repr=False)


def _from_netrc(host: str, netrc_file: Path | None) -> tuple[str | None, str] | None:
    path = netrc_file if netrc_file is not None else Path.home() / ".netrc"
    if not path.is_file():
        return None
    try:
        found = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        # The parse error quotes the offending line, which may hold a password.
        raise ConfigError(
            f"{path} cannot be read ({type(exc).__name__}): fix its syntax or set {PASSWORD_ENV}"
        ) from None
    if found is None:
        return None
    login, _, password = found
    return (login or None), password


def resolve_credentials(
    server: str,
    user: str | None,
    password: str | None,
    *,
    netrc_file: Path | None = None,
) -> Credentials:
    """Credentials for ``server``: explicit password, else $SINAGOT_XNAT_PASSWORD, else ~/.netrc.

    The user may also come from the netrc entry of the server's host when it is
    not given. Nothing here is ever logged with the password.
    """
    if password:
        source = "config"
    elif os.environ.get(PASSWORD_ENV):
        password, source = os.environ[PASSWORD_ENV], PASSWORD_ENV
    else:
        host = urlsplit(server).hostname or server
        entry = _from_netrc(host, netrc_file)
        if entry is not None and (user is None or entry[0] in (None, user)):
            user = user or entry[0]
            password, source = entry[1], "netrc"
    if not user:
        raise ConfigError(f"no XNAT user for {server}: set [store] user (or a ~/.netrc login)")
    if not password:
        raise ConfigError(
            f"no password for XNAT user {user!r} on {server}: set [store] password,"
            f" ${PASSWORD_ENV}, or a ~/.netrc entry for the server's host"
        )
    logger.debug("XNAT credentials for user %s on %s come from %s", user, server, source)
    return Credentials(user=user, password=password)
