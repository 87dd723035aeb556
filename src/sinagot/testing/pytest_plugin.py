"""Pytest fixtures giving a running XNAT emulator on a free loopback port.

Enable with ``pytest_plugins = ["sinagot.testing.pytest_plugin"]`` in a conftest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from ._server import EmulatorServer

__all__ = ["xnat_server", "xnat_server_factory"]

PROFILE_ENV = "SINAGOT_TEST_XNAT_PROFILE"
XNAT_USER = "alice"
XNAT_PASSWORD = "secret"


@pytest.fixture
def xnat_server_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators in background threads: ``factory(data_dir=None, **EmulatorServer kwargs)``.

    E.g. ``factory(profile="production")`` for one that answers like a loaded XNAT.
    Defaults: a fresh data dir under tmp_path, user alice/secret with access to all, and
    the profile ``$SINAGOT_TEST_XNAT_PROFILE`` names (else "fast"): a whole suite can
    run against a production-like server. Every server started is stopped at the end
    of the test.
    """
    with ExitStack() as stack:
        counter = 0

        def start(data_dir: Path | None = None, **kwargs: Any) -> EmulatorServer:
            nonlocal counter
            counter += 1
            kwargs.setdefault("users", {XNAT_USER: XNAT_PASSWORD})
            kwargs.setdefault("profile", os.environ.get(PROFILE_ENV) or "fast")
            server = EmulatorServer(data_dir or tmp_path / f"xnat-{counter}", **kwargs)
            stack.callback(server.close)
            return stack.enter_context(server.running_in_thread())

        yield start


@pytest.fixture
def xnat_server(xnat_server_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A running emulator (alice/secret, access to all) with an empty fresh data dir."""
    return xnat_server_factory()
