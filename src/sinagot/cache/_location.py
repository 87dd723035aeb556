"""Where the cache lives on disk."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_cache_dir"]


def resolve_cache_dir(explicit: Path | None) -> Path:
    """The cache root: ``explicit`` (config ``[store] cache_dir``), else ``$CACHE_DIRECTORY``, else platformdirs.

    systemd sets ``$CACHE_DIRECTORY`` (possibly to several colon-separated
    directories) when the unit has ``CacheDirectory=``; the first one is used.
    """
    if explicit is not None:
        return explicit
    from_env = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if from_env:
        return Path(from_env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("sinagot"))
