"""The cache's testing API: what tests use below :mod:`sinagot.cache`.

Declared here so that they import no private module (tests/test_architecture.py checks
it). The modules themselves, for tests that change their tuning constants; the staging
folders' prefixes, for checks that none was left.
Not for product code.
"""

from __future__ import annotations

from . import _download as download
from . import _ranged as ranged
from ._lock import NEW_STAGING_PREFIX, STAGING_PREFIX

__all__ = ["NEW_STAGING_PREFIX", "STAGING_PREFIX", "download", "ranged"]
