"""Run ``sinagot daemon`` with a test backend: ``python tests/daemon_entry.py CONFIG...``.

``SINAGOT_TEST_BACKEND=module:factory`` names the backend factory; only this
test entry point reads it, the product never does.
"""

from __future__ import annotations

import importlib
import os
import sys

import sinagot.daemon
from sinagot.cli import main

if __name__ == "__main__":
    module_name, _, attribute = os.environ["SINAGOT_TEST_BACKEND"].partition(":")
    # `sinagot daemon` looks the factory up on sinagot.daemon when it starts.
    sinagot.daemon.backend_for = getattr(importlib.import_module(module_name), attribute)
    sys.exit(main(["--log-level", "DEBUG", "daemon", *sys.argv[1:]]))
