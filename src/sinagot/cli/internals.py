"""The command line's testing API: what tests use below :mod:`sinagot.cli`.

Declared here so that they import no private module (tests/test_architecture.py checks
it). Not for product code.
"""

from __future__ import annotations

from ._cache import parse_size
from ._id_pattern import derive_id_pattern
from ._unit import UnitSpec, own_command, render_unit

__all__ = ["UnitSpec", "derive_id_pattern", "own_command", "parse_size", "render_unit"]
