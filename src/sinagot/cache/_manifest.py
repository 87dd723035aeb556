"""The manifest of a cached entry: the commit point of every download.

The manifest names the generation directory that holds the entry's verified
files, with each file's size, MD5 and mtime (so that an unchanged entry is
recognised by ``stat`` alone, without hashing). It is written atomically and
last: until it is renamed into place, a new generation is invisible.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes
from ._remote_files import ManifestFile, RemoteFile

__all__ = ["MANIFEST_NAME", "Manifest", "read_manifest", "write_manifest"]

MANIFEST_NAME = "manifest.json"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a cached entry holds: the generation directory name and its verified files."""

    generation: str
    files: tuple[ManifestFile, ...]
    last_modified: str | None
    fetched: float  # seconds since the epoch
    # The manifest file's mtime, refreshed on cache hits: the entry's last use, for LRU eviction.
    last_used: float = 0.0

    def by_name(self) -> Mapping[str, ManifestFile]:
        return {f.name: f for f in self.files}

    def matches(self, files: Sequence[RemoteFile], last_modified: str | None) -> bool:
        """True when the manifest describes exactly ``files`` (and ``last_modified``, if given).

        A file listed without a digest matches by size, and only when ``last_modified``
        is given: without a digest, the server's change marker is all there is.
        """
        if last_modified is not None and last_modified != self.last_modified:
            return False
        if len(files) != len(self.files):
            return False
        mine = self.by_name()
        for wanted in files:
            have = mine.get(wanted.name)
            if have is None or have.size != wanted.size:
                return False
            if wanted.digest != have.md5 and (wanted.digest or last_modified is None):
                return False
        return True

    def stat_matches(self, generation_dir: str) -> bool:
        """True when every file is on disk with the recorded size and mtime (no hashing)."""
        for f in self.files:
            try:
                st = os.stat(os.path.join(generation_dir, f.name))
            except OSError:
                return False
            if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                return False
        return True


def read_manifest(path: str | Path) -> Manifest | None:
    """The manifest at ``path``, or None if it is missing or unreadable (the entry is then refetched)."""
    try:
        with open(path, "rb") as handle:
            raw: Any = json.loads(handle.read())
            last_used = os.fstat(handle.fileno()).st_mtime
        if raw.get("format") != _FORMAT:
            return None
        return Manifest(
            generation=str(raw["generation"]),
            files=tuple(
                ManifestFile(
                    name=str(f["name"]),
                    size=int(f["size"]),
                    md5=str(f["md5"]),
                    mtime_ns=int(f["mtime_ns"]),
                )
                for f in raw["files"]
            ),
            last_modified=None if raw["last_modified"] is None else str(raw["last_modified"]),
            fetched=float(raw["fetched"]),
            last_used=last_used,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_manifest(path: Path, manifest: Manifest, key: Mapping[str, str]) -> None:
    """Atomically replace the manifest at ``path`` (temp file, fsync, rename, fsync dir)."""
    document = {
        "format": _FORMAT,
        "key": dict(key),
        "generation": manifest.generation,
        "last_modified": manifest.last_modified,
        "fetched": manifest.fetched,
        "files": [
            {"name": f.name, "size": f.size, "md5": f.md5, "mtime_ns": f.mtime_ns}
            for f in manifest.files
        ],
    }
    atomic_write_bytes(path, json.dumps(document, indent=1).encode())
