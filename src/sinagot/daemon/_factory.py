"""The backend factory the daemon is started with: the XNAT backend for XNAT configs.

It lives apart from the backend interface (:mod:`._backend`) so that the interface does
not import its implementation, which imports it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DaemonError
from ._backend import DatasetBackend

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["backend_for"]


def backend_for(settings: Settings) -> DatasetBackend:
    """Build the backend for one dataset config: the daemon follows XNAT projects."""
    if settings.store.type == "xnat":
        from ._xnat_backend import XnatBackend  # imports aiohttp and the engine: when used

        return XnatBackend.from_settings(settings)
    raise DaemonError(
        f"{settings.config_path} has [store] type {settings.store.type!r}: the daemon follows"
        ' XNAT servers, so give it a config with [store] type = "xnat" (run a local dataset'
        " with `sinagot run CONFIG`)"
    )
