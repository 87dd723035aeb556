"""Where the XNAT password comes from: config, a systemd credential, environment, ``~/.netrc``.

The environment variable is a way to hand the password to the process, not a
place to keep it: :func:`take_environment_password` moves it out of
``os.environ`` before any child process (a Dask worker, a nanny, a lab script)
is started, so that it does not inherit it.
"""

from __future__ import annotations

import logging
import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = [
    "CREDENTIALS_ENV",
    "PASSWORD_ENV",
    "Credentials",
    "resolve_credentials",
    "take_environment_password",
]

PASSWORD_ENV = "SINAGOT_XNAT_PASSWORD"
# Set by systemd for a unit with LoadCredential=: a private folder of one file per credential.
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
# A password file is a few dozen bytes: a bigger one is the wrong file.
_MAX_CREDENTIAL_BYTES = 4096

logger = logging.getLogger(__name__)

# The password taken out of the environment, for the stores built after that.
_taken: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password; the password never appears in ``repr``."""

    user: str
    password: str = field(repr=False)


def take_environment_password() -> None:
    """Move ``$SINAGOT_XNAT_PASSWORD`` out of the environment into this process's memory.

    Call it before starting child processes: they inherit ``os.environ``. A value
    set again later replaces the one taken (see :func:`resolve_credentials`).
    """
    global _taken
    value = os.environ.pop(PASSWORD_ENV, None)
    if value:
        _taken = value


def _from_credential(name: str) -> str:
    directory = os.environ.get(CREDENTIALS_ENV)
    if not directory:
        raise ConfigError(
            f"[store] password_credential = {name!r} but ${CREDENTIALS_ENV} is not set:"
            f" run under systemd with LoadCredential={name}:/path/to/password-file"
            f" (or set ${CREDENTIALS_ENV} to the folder holding the file {name})"
        )
    path = Path(directory) / name
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_CREDENTIAL_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"[store] password_credential: no credential file {path}:"
            f" add LoadCredential={name}:/path/to/password-file to the unit"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"[store] password_credential: cannot read {path} ({exc.strerror}): fix its permissions"
        ) from None
    if len(raw) > _MAX_CREDENTIAL_BYTES:
        raise ConfigError(
            f"[store] password_credential: {path} is over {_MAX_CREDENTIAL_BYTES} bytes:"
            " it should hold the password alone"
        )
    try:
        # A trailing newline is what editors and `echo` leave: it is not part of the password.
        password = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(
            f"[store] password_credential: {path} is not UTF-8 text: write the password alone"
        ) from None
    if not password:
        raise ConfigError(f"[store] password_credential: {path} is empty: write the password in it")
    return password


def _from_netrc(server: str, netrc_file: Path | None) -> tuple[str | None, str] | None:
    """The login and password of ``server`` in the netrc file, as xnatpy finds them.

    The file is ``netrc_file``, else ``$NETRC``, else ``~/.netrc``; the entry that of
    the server's ``host:port`` (xnatpy's key), else of its host, else ``default``.
    """
    if netrc_file is not None:
        path = netrc_file
    else:
        path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        parsed = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as exc:
        # The parse error quotes the offending line, which may hold a password.
        raise ConfigError(
            f"{path} cannot be read ({type(exc).__name__}): fix its syntax or set {PASSWORD_ENV}"
        ) from None
    parts = urlsplit(server)
    machines = [parts.netloc.rpartition("@")[2], parts.hostname or server]
    found = next((parsed.hosts[m] for m in machines if m in parsed.hosts), None)
    if found is None:
        found = parsed.authenticators("default")
    if found is None:
        return None
    login, _, password = found
    return (login or None), password


def resolve_credentials(
    server: str,
    user: str | None,
    password: str | None,
    *,
    credential: str | None = None,
    netrc_file: Path | None = None,
) -> Credentials:
    """Credentials for ``server``, from the first of: the explicit ``password``, the systemd
    credential ``credential`` (``$CREDENTIALS_DIRECTORY/<credential>``, which must then
    exist), ``$SINAGOT_XNAT_PASSWORD`` (or what :func:`take_environment_password` took
    of it), ``~/.netrc`` as xnatpy reads it (see :func:`_from_netrc`).

    The user may also come from the netrc entry when it is not given. An alias token's
    alias and secret may stand for the user and password: the client trades either for
    an alias token of its own at login. Nothing here is ever logged with the password.
    """
    if password:
        source = "config"
    elif credential is not None:
        password, source = _from_credential(credential), f"credential {credential}"
    elif os.environ.get(PASSWORD_ENV) or _taken:
        password, source = os.environ.get(PASSWORD_ENV) or _taken, PASSWORD_ENV
    else:
        entry = _from_netrc(server, netrc_file)
        if entry is not None and (user is None or entry[0] in (None, user)):
            user = user or entry[0]
            password, source = entry[1], "netrc"
    if not user:
        raise ConfigError(f"no XNAT user for {server}: set [store] user (or a ~/.netrc login)")
    if not password:
        raise ConfigError(
            f"no password for XNAT user {user!r} on {server}: set [store] password_credential"
            f" (systemd LoadCredential=), ${PASSWORD_ENV}, or a ~/.netrc entry for the server's"
            " host"
        )
    logger.debug("XNAT credentials for user %s on %s come from %s", user, server, source)
    return Credentials(user=user, password=password)
