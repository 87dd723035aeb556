"""Sinagot 0.1's ``sinagot.plugins``: ``DaskRunManager`` is the runner on Dask.

Runs pick it from the config (``[run] mode = "dask"``) or ``run(mode="dask")``.
"""

from __future__ import annotations

from ..engine import DaskRunner

DaskRunManager = DaskRunner

__all__ = ["DaskRunManager"]
