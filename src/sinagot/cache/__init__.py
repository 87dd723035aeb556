"""A checksum-verified local cache of remote entries, safe for many processes at once.

::

    cache = Cache(resolve_cache_dir(settings.store.cache_dir))
    async with cache.using(key):
        folder = await cache.fetch(key, files, source, last_modified=...)
        ...  # folder holds exactly `files`, verified against their MD5 digests

See ``_cache.py`` for the on-disk layout and the guarantees.
"""

from __future__ import annotations

from ._cache import Cache, EntryUse
from ._folder_source import LocalFileSource
from ._location import resolve_cache_dir
from ._maintenance import EntryInfo, GcReport, VerifyProblem, VerifyReport
from ._manifest import Manifest
from ._remote_files import EntryKey, FileSource, ManifestFile, RemoteFile

__all__ = [
    "Cache",
    "EntryInfo",
    "EntryKey",
    "EntryUse",
    "FileSource",
    "GcReport",
    "LocalFileSource",
    "Manifest",
    "ManifestFile",
    "RemoteFile",
    "VerifyProblem",
    "VerifyReport",
    "resolve_cache_dir",
]
