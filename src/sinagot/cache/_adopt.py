"""Files the caller already holds, entered in a staging folder as an entry's verified files.

What Sinagot uploads, the server then lists with the digests of the bytes it was
sent: copying those bytes into the cache (never linking: the caller's copy may be
changed later, the cache's must not) and checking each against the digest the
server lists makes the cache entry exactly what a download would have made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ChecksumMismatchError
from ._remote_files import RemoteFile

__all__ = ["copy_verified"]

_CHUNK = 1 << 20


def copy_verified(
    sources: Mapping[str, Path], target: Path, files: Sequence[RemoteFile]
) -> dict[str, str]:
    """Copy each of ``files`` from its path in ``sources`` (by name) to ``target``
    (blocking; the commit syncs them); their MD5s.

    Raises ChecksumMismatchError when a file's bytes are not those its digest and size
    say (the caller's copy changed since it was sent).
    """
    md5s: dict[str, str] = {}
    for file in files:
        source, copy = sources[file.name], target / file.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        with source.open("rb") as reader, copy.open("xb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != file.digest or size != file.size:
            raise ChecksumMismatchError(
                f"{source} is not the file the server lists as {file.name}"
                f" ({size} bytes, MD5 {digest.hexdigest()}; listed: {file.size} bytes,"
                f" MD5 {file.digest}): it changed since it was uploaded"
            )
        md5s[file.name] = file.digest
    return md5s
