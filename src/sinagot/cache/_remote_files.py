"""Value objects of the cache: what to fetch, from where, and what was fetched.

Every name in these objects comes from a server, so each is validated when the
object is built, before anything touches the disk: an unsafe name raises
:class:`~sinagot.errors.UnsafeNameError`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

from .._names import check_length
from ..errors import ServerError, UnsafeNameError

__all__ = [
    "ArchiveSource",
    "EntryKey",
    "FileSource",
    "ManifestFile",
    "RemoteFile",
    "check_file_set",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_RENAME = "rename it on the server"


def _check_relative_path(value: str, what: str) -> None:
    """Reject anything that could escape or alias its folder when used as a relative path."""
    if not value:
        raise UnsafeNameError(f"{what} is empty: the server must give a non-empty name")
    if "\x00" in value or "\\" in value:
        raise UnsafeNameError(
            f"{what} {value!r} contains a NUL or backslash: refusing to use it as a local path"
        )
    if value.startswith("/"):
        raise UnsafeNameError(f"{what} {value!r} is absolute: only relative names are accepted")
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeNameError(
                f"{what} {value!r} has an empty, '.' or '..' part: refusing to use it as a local path"
            )


def _check_segment(value: str, what: str) -> None:
    _check_relative_path(value, what)
    if "/" in value:
        raise UnsafeNameError(f"{what} {value!r} contains '/': it must be a single name")


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a remote entry, as listed by the server.

    ``name`` is a relative POSIX path inside the entry (``"a/b.nii"``), ``size``
    its length in bytes and ``digest`` the MD5 hex digest the server announces,
    or ``""`` when it announces none (then the size, and the ``last_modified``
    the caller gives the cache, must tell a changed file).
    """

    name: str
    size: int
    digest: str

    def __post_init__(self) -> None:
        _check_relative_path(self.name, "file name")
        check_length(self.name, "file name", _RENAME)
        if self.size < 0:
            raise ServerError(
                f"the server lists file {self.name!r} with a negative size {self.size}"
            )
        digest = self.digest.lower()
        # "": the server has no digest of it (XNAT with checksums off): its size must do.
        if digest and (len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest)):
            raise ServerError(
                f"the server lists file {self.name!r} with digest {self.digest!r}, not an MD5 hex string"
            )
        # Servers differ in hex case; one spelling keeps manifest comparisons exact.
        object.__setattr__(self, "digest", digest)


# A process talks to a few servers, and every key names one: parse each URL once.
@functools.lru_cache(maxsize=64)
def _server_dirname(server: str) -> str:
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError as exc:
        raise UnsafeNameError(f"server URL {server!r} is invalid: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise UnsafeNameError(
            f"server URL {server!r} is not an http(s)://host[:port] URL: fix [store] server"
        )
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    name = f"{scheme}-{quote(host, safe='')}-{port}"
    # One server, however its URL spells the path: %41 is A, a trailing / changes nothing.
    path = unquote(parts.path).strip("/")
    return f"{name}+{quote(path, safe='')}" if path else name


@dataclass(frozen=True, slots=True)
class EntryKey:
    """Where an entry comes from: server base URL, project, session and entry path.

    The scheme, host, port and path of ``server`` are part of the key, so two
    servers on one host (``https://h/xnatA`` and ``https://h/xnatB``) never share
    cache entries. ``entry`` is a relative path such as ``"scans/1/resources/EEG"``.
    """

    server: str
    project: str
    session: str
    entry: str
    # Computed once: cache hits are counted in microseconds.
    _relative: tuple[str, str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_segment(self.project, "project")
        _check_segment(self.session, "session")
        _check_relative_path(self.entry, "entry")
        relative = (
            self.server_dirname(),
            quote(self.project, safe=""),
            quote(self.session, safe=""),
            quote(self.entry, safe=""),
        )
        # Percent-encoding can triple a name: the folder names, not the names, must fit.
        for folder, what in zip(relative, ("server", "project", "session", "entry"), strict=True):
            check_length(folder, f"cache folder name of the {what}", _RENAME)
        object.__setattr__(self, "_relative", relative)

    def server_dirname(self) -> str:
        """The directory name of the server: ``<scheme>-<host>-<port>[+<path>]``.

        The path is percent-encoded into the one name (``/`` too), and ``+`` never
        occurs in an encoded host or path, so no path can make one server look like
        another. A server without a path keeps the name it had before paths counted.
        """
        return _server_dirname(self.server)

    def relative_dir(self) -> tuple[str, str, str, str]:
        """The four directory names of the entry below the cache root.

        The entry path is percent-encoded into one name so that entries never
        nest inside each other (``scans/1`` and ``scans/1/resources/EEG``).
        """
        return self._relative


class FileSource(Protocol):
    """Where the bytes of remote files come from (the XNAT connector, or local files in tests).

    ``stream(file, offset, end)`` yields the bytes of ``file`` from ``offset`` to
    ``end`` (exclusive; None: its end). The cache asks for ``offset > 0`` or an
    ``end`` only when ``supports_range`` is true.
    """

    supports_range: bool

    def stream(
        self, file: RemoteFile, offset: int, end: int | None = None
    ) -> AsyncIterator[bytes]: ...


@runtime_checkable
class ArchiveSource(FileSource, Protocol):
    """A source that can also send all of an entry's files as one zip archive.

    One request instead of one per file: on a server with real per-request latency
    (XNAT) it is what pays for entries of many small files. Member names end with
    ``/files/<file name>`` (XNAT's layout) or are the file names themselves.
    """

    def archive(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One verified file of a cached entry, with the stat used for cheap freshness checks."""

    name: str
    size: int
    md5: str
    mtime_ns: int


def check_file_set(files: Sequence[RemoteFile]) -> None:
    """Reject file lists whose names would collide on disk (duplicates, or a file also used as a folder)."""
    names = {f.name for f in files}
    if len(names) != len(files):
        raise UnsafeNameError("the server listed the same file name twice in one entry")
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in names:
                raise UnsafeNameError(
                    f"file {prefix!r} is also a folder of {name!r}: the entry cannot be stored"
                )
