"""Removal of superseded generations of an entry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ._lock import try_use_lock
from ._manifest import MANIFEST_NAME, read_manifest

__all__ = ["GENERATION_PREFIX", "prune_generations"]

GENERATION_PREFIX = "g-"


def prune_generations(home: Path) -> int:
    """Remove generations other than the manifest's when no job uses the entry; return how many."""
    use = try_use_lock(home, exclusive=True)
    if use is None:
        return 0
    try:
        manifest = read_manifest(home / MANIFEST_NAME)
        current = manifest.generation if manifest is not None else None
        removed = 0
        for entry in os.scandir(home):
            if entry.name.startswith(GENERATION_PREFIX) and entry.name != current:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        return removed
    finally:
        use.release()
