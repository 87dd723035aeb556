"""Sinagot 0.1's import names: model files in users' datasets import them.

>>> from sinagot.models import Record, Subset
>>> class BehaviorSubset(Subset):       # <scripts>/behavior/models/subset.py
...     task = "HDC"

``Subset`` is ``RecordCollection`` (0.1.4's name); ``Scope`` is the base of both and
of ``Record``; ``ConfigurationError`` is :class:`sinagot.ConfigError`.
"""

from __future__ import annotations

from ..engine import Dataset, Record, RecordCollection, Step, StepCollection, Subset
from ..engine import ScopeBase as Scope
from ..errors import ConfigError

ConfigurationError = ConfigError

__all__ = [
    "ConfigurationError",
    "Dataset",
    "Record",
    "RecordCollection",
    "Scope",
    "Step",
    "StepCollection",
    "Subset",
]
