"""Write the demo: data, scripts and config."""

from __future__ import annotations

import logging
from pathlib import Path

from .._fs import atomic_write_bytes
from ._data import write_demo_recordings
from ._scripts import DEMO_CONFIG, DEMO_SCRIPTS

__all__ = ["CONFIG_NAME", "write_demo"]

_log = logging.getLogger(__name__)

CONFIG_NAME = "sinagot.toml"


def write_demo(directory: Path) -> Path:
    """Write the demo into ``directory`` unless it is already there; return the config path.

    An existing demo is left as it is (also any edits to it), so running the
    demo again shows that nothing needs to be recomputed.
    """
    config = directory / CONFIG_NAME
    if config.exists():
        _log.info("using the existing demo in %s", directory)
        return config
    write_demo_recordings(directory / "data")
    for name, source in DEMO_SCRIPTS.items():
        atomic_write_bytes(directory / "scripts" / name, source.encode())
    atomic_write_bytes(config, DEMO_CONFIG.encode())
    _log.info("wrote the demo dataset, scripts and config to %s", directory)
    return config
