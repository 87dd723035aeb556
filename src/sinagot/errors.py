"""Every error Sinagot raises on purpose, in one place.

All of them derive from :class:`SinagotError`, so a caller (and the CLI) can
catch one type. Each message names the thing that is wrong and how to fix it,
on one line, and never contains a password or a session token.

::

    SinagotError
    ├── ConfigError               a config file is invalid
    ├── ScriptError               a script file cannot be loaded or is malformed
    ├── RecordNotFoundError       an id that is not in the dataset (also a KeyError)
    ├── ScopeError                no such task or modality scope (also an AttributeError)
    ├── NotFoundError             no such step in a scope (also a LookupError)
    ├── NoModalityError           a step asked of a scope without a modality (also a ValueError)
    ├── NotUnitError              a record's step status asked without one task (also a ValueError)
    ├── ArgumentError             an API call with an argument it does not take (also a TypeError)
    ├── StoreError                talking to a store failed
    │   ├── AuthenticationError   the server refused the credentials (401)
    │   ├── AccessDeniedError     the user has no access to a project (403)
    │   ├── RemoteNotFoundError   a session, resource or file does not exist (404)
    │   ├── RequestRefusedError   the server refused a request (another 4xx)
    │   ├── ServerError           the server kept failing or answered nonsense
    │   └── UnsafeNameError       a name would escape its folder or is too long to store
    ├── CacheError                the local cache cannot deliver an entry
    │   ├── ChecksumMismatchError downloaded bytes do not match the server digest
    │   ├── CacheLockTimeoutError another process held an entry for too long
    │   └── CacheFullError        the disk holding the cache is full
    ├── DaemonError               the daemon cannot do what was asked
    │   ├── DaemonNotRunningError no daemon answers on the control socket
    │   ├── InvalidTransitionError a job or the daemon would change state against its table
    │   └── NotificationError     a notification ([notify] urls) could not be delivered
    └── EmulatorError             the test XNAT server cannot do what was asked
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ArgumentError",
    "AuthenticationError",
    "CacheError",
    "CacheFullError",
    "CacheLockTimeoutError",
    "ChecksumMismatchError",
    "ConfigError",
    "DaemonError",
    "DaemonNotRunningError",
    "EmulatorError",
    "InvalidTransitionError",
    "NoModalityError",
    "NotFoundError",
    "NotUnitError",
    "NotificationError",
    "RecordNotFoundError",
    "RemoteNotFoundError",
    "RequestRefusedError",
    "ScopeError",
    "ScriptError",
    "ServerError",
    "SinagotError",
    "StoreError",
    "UnsafeNameError",
]


class SinagotError(Exception):
    """Base class of every error Sinagot raises on purpose."""


class ConfigError(SinagotError):
    """A configuration file is missing, unreadable or invalid."""


class ScriptError(SinagotError):
    """A script file cannot be imported or does not define a valid ``Script``."""


class RecordNotFoundError(SinagotError, KeyError):
    """The dataset has no record with the requested id."""

    def __str__(self) -> str:
        # KeyError quotes its argument; we want the plain message.
        return str(self.args[0]) if self.args else ""


class ScopeError(SinagotError, AttributeError):
    """A task or modality scope (``ds.RS``, ``rec.EEG``) that the config does not define."""


class NotFoundError(SinagotError, LookupError):
    """A step (a script) that the scope does not have (Sinagot 0.1's name)."""


class NoModalityError(SinagotError, ValueError):
    """A step asked of a scope that has no modality: steps are scripts of one modality."""


class NotUnitError(SinagotError, ValueError):
    """A step's status asked of a scope without one record, task and modality."""


class ArgumentError(SinagotError, TypeError):
    """A call of the Python API with an argument it does not take."""


class StoreError(SinagotError):
    """Reading from or writing to a data store failed."""


class AuthenticationError(StoreError):
    """The server rejected the user name or password."""


class AccessDeniedError(StoreError):
    """The user is authenticated but may not access the project."""


class RemoteNotFoundError(StoreError):
    """The requested session, resource or file does not exist on the server."""


class RequestRefusedError(StoreError):
    """The server refused a request as malformed or not allowed (a 4xx other than 401/403/404)."""


class ServerError(StoreError):
    """The server failed repeatedly or answered something that cannot be used."""


class UnsafeNameError(StoreError):
    """A name (from a server, or for an output) is not safe or too long to use as a local path."""


class CacheError(SinagotError):
    """The local cache cannot deliver a verified entry."""


class ChecksumMismatchError(CacheError):
    """Downloaded bytes do not match the digest announced by the server."""


class CacheLockTimeoutError(CacheError):
    """Waited too long for another process that holds an entry's lock."""


class CacheFullError(CacheError):
    """The file system holding the cache has no space left."""


class DaemonError(SinagotError):
    """The daemon cannot carry out a request."""


class DaemonNotRunningError(DaemonError):
    """No daemon answers on the control socket."""


class InvalidTransitionError(DaemonError):
    """A job or the daemon would change state in a way its state table does not allow."""


class NotificationError(DaemonError):
    """A notification could not be delivered to one of ``[notify] urls``."""


class EmulatorError(SinagotError):
    """The XNAT emulator (``sinagot.testing``) cannot seed or find what was asked."""
