"""Stores: where records and their derivatives live (FrameTree's storage interface)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._layout import DERIVATIVES_DIR
from ._data_model import (
    DataEntry,
    DataRow,
    DataTree,
    FileSet,
    derivative_path,
    split_derivative_path,
    validate_label,
    validate_relative_path,
)
from ._factory import open_store
from ._local_store import LocalStore
from ._remote import RemoteStore
from ._server_pace import PaceView, ServerPace, ServerPaces
from ._store import FieldValue, Store
from ._xnat_credentials import take_environment_password

if TYPE_CHECKING:
    from ._xnat import XnatStore
    from ._xnat_async import AsyncXnatStore
    from ._xnat_client import RetryPolicy
    from ._xnat_loop import LoopPortal
    from ._xnat_names import PROVENANCE_FILE, SessionListing, derivative_urls, resource_label

# The XNAT connector pulls in aiohttp: import it on first use, so the CLI starts fast.
_LAZY = {
    "AsyncXnatStore": "._xnat_async",
    "LoopPortal": "._xnat_loop",
    "PROVENANCE_FILE": "._xnat_names",
    "SessionListing": "._xnat_names",
    "derivative_urls": "._xnat_names",
    "XnatStore": "._xnat",
    "resource_label": "._xnat_names",
    "RetryPolicy": "._xnat_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "DERIVATIVES_DIR",
    "PROVENANCE_FILE",
    "AsyncXnatStore",
    "DataEntry",
    "DataRow",
    "DataTree",
    "FieldValue",
    "FileSet",
    "LocalStore",
    "LoopPortal",
    "PaceView",
    "RemoteStore",
    "RetryPolicy",
    "ServerPace",
    "ServerPaces",
    "SessionListing",
    "Store",
    "XnatStore",
    "derivative_path",
    "derivative_urls",
    "open_store",
    "resource_label",
    "split_derivative_path",
    "take_environment_password",
    "validate_label",
    "validate_relative_path",
]
