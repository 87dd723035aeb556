"""The connectors' testing API: what tests use below :mod:`sinagot.connectors`.

Declared here so that they import no private module (tests/test_architecture.py checks
it). Not for product code.
"""

from __future__ import annotations

from ._server_pace import BUMP_GAP, MAX_HOLD, MAX_LEVEL, MIN_SAMPLES
from ._xnat_client import XnatClient
from ._xnat_credentials import Credentials, resolve_credentials
from ._xnat_names import file_name, quote_segment
from ._xnat_upload import (
    ARCHIVE_MAX_MEMBERS,
    ARCHIVE_MEMBER_MAX,
    ArchiveBody,
    FileBody,
    plan_uploads,
)

__all__ = [
    "ARCHIVE_MAX_MEMBERS",
    "ARCHIVE_MEMBER_MAX",
    "BUMP_GAP",
    "MAX_HOLD",
    "MAX_LEVEL",
    "MIN_SAMPLES",
    "ArchiveBody",
    "Credentials",
    "FileBody",
    "XnatClient",
    "file_name",
    "plan_uploads",
    "quote_segment",
    "resolve_credentials",
]
