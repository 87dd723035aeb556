"""Sinagot 0.1's exceptions of the step API, under their original names.

They are Sinagot errors (see :mod:`sinagot.errors`): ``NotFoundError`` (no such step,
also a LookupError), ``NoModalityError`` and ``NotUnitError`` (also ValueErrors).
"""

from __future__ import annotations

from ..errors import NoModalityError, NotFoundError, NotUnitError

__all__ = ["NoModalityError", "NotFoundError", "NotUnitError"]
