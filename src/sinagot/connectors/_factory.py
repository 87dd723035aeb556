"""Build the store a config describes; the Dataset code never branches on store type."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ._local_store import LocalStore
from ._store import Store

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["open_store"]


def open_store(settings: Settings) -> Store:
    """The store of ``settings.store`` ("local": the ``[path] dataset`` folder; "xnat": a project)."""
    store = settings.store
    if store.type == "local":
        if settings.dataset_dir is None:
            raise ConfigError(
                f"{settings.config_path}: path.dataset: is missing; add it for a local store"
            )
        return LocalStore(settings.dataset_dir, name=settings.config_path.stem)
    if store.type == "xnat":
        from ._xnat import XnatStore  # imports aiohttp: only when an XNAT store is wanted

        return XnatStore.from_settings(settings)
    raise ConfigError(
        f"{settings.config_path}: store.type: [store] type {store.type!r} is not available yet;"
        ' use type = "local"'
    )
