"""Stores: where records and their derivatives live (FrameTree's storage interface)."""

from __future__ import annotations

from ._local import DERIVATIVES_DIR, LocalStore
from ._store import FieldValue, Store
from ._values import (
    DataEntry,
    DataRow,
    DataTree,
    FileSet,
    derivative_path,
    split_derivative_path,
    validate_label,
    validate_relative_path,
)

__all__ = [
    "DERIVATIVES_DIR",
    "DataEntry",
    "DataRow",
    "DataTree",
    "FieldValue",
    "FileSet",
    "LocalStore",
    "Store",
    "derivative_path",
    "split_derivative_path",
    "validate_label",
    "validate_relative_path",
]
