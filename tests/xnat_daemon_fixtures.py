"""Fixtures of the XNAT daemon tests (a pytest plugin, see conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daemon_xnat_support import PROJECT, XnatDaemon
from sinagot.testing import EmulatorServer


@pytest.fixture
def lab(xnat_server: EmulatorServer) -> EmulatorServer:
    """The emulator with the project the XNAT daemon tests follow."""
    xnat_server.create_project(PROJECT)
    return xnat_server


@pytest.fixture
def daemons() -> Iterator[list[XnatDaemon]]:
    """Daemons a test appends here are killed at its end if it left them running."""
    started: list[XnatDaemon] = []
    yield started
    for daemon in started:
        daemon.ensure_stopped()
