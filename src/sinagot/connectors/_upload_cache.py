"""What Sinagot uploads feeds the cache: a derivative and its provenance, as the server lists them.

A fresh work tree (or another node on a shared cache) reads the derivatives Sinagot
itself put up: the outputs later steps take as inputs, and each step's provenance.
Once the server lists an upload with the digests of the bytes sent (the upload is
verified), those bytes are entered in the cache as that entry's verified files
(:meth:`sinagot.cache.Cache.adopt`): the cache then holds exactly what a download
would have brought, and no one downloads it.

A provenance document is a file of the session's ``PROVENANCE`` resource, shared by
every derivative of the session: each one is its own cache entry, keyed by the
file's path in the session, so that entering one never replaces another. It is
entered as sent (listing the resource after each PUT would cost a request per
step), and read from the cache only when the session's provenance listing shows
its digest (:func:`cached_provenance`): the server's word still decides.

Feeding the cache is a saving, never a condition: a failure is logged and the upload
stands.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cache import Cache, EntryKey, RemoteFile
from ..errors import CacheError
from ._xnat_names import PROVENANCE_FILE, PROVENANCE_RESOURCE

__all__ = ["cache_upload", "cached_provenance", "provenance_key"]

logger = logging.getLogger(__name__)


def provenance_key(server: str, project: str, session: str, name: str) -> EntryKey:
    """The cache entry of provenance file ``name`` of ``session``."""
    return EntryKey(server, project, session, f"resources/{PROVENANCE_RESOURCE}/files/{name}")


async def cache_upload(
    cache: Cache, key: EntryKey, listed: Mapping[str, RemoteFile], sources: Mapping[str, Path]
) -> None:
    """Enter an uploaded entry in the cache: the files the server ``listed`` after the
    upload (a legacy ``provenance.json`` inside it aside, as downloads leave it), each from
    its local copy in ``sources``. Skipped where the server lists a file without a digest
    or one Sinagot did not send."""
    files = [file for name, file in listed.items() if name != PROVENANCE_FILE]
    if not files or any(not f.digest or f.name not in sources for f in files):
        return
    try:
        await cache.adopt(key, files, sources)
    except (OSError, CacheError) as exc:
        logger.warning(
            "%s of %s: not entered in the cache after its upload (%s); it is downloaded when"
            " needed",
            key.entry,
            key.session,
            exc,
        )


def _read(path: Path, md5: str) -> dict[str, Any] | None:
    data = path.read_bytes()
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        return None
    document = json.loads(data)
    return document if isinstance(document, dict) else None


async def cached_provenance(cache: Cache, key: EntryKey, md5: str) -> dict[str, Any] | None:
    """The provenance document the cache holds as ``key`` if it is the file of digest ``md5``
    (as the session's provenance listing gives it); None otherwise."""
    manifest = await asyncio.to_thread(cache.manifest, key)
    if manifest is None or len(manifest.files) != 1 or manifest.files[0].md5 != md5:
        return None
    held = manifest.files[0]
    async with cache.using(key):
        folder = await asyncio.to_thread(cache.lookup, key, [RemoteFile(held.name, held.size, md5)])
        if folder is None:
            return None
        return await asyncio.to_thread(_read, folder / held.name, md5)
