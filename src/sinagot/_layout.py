"""Where everything lives in a dataset's local work tree (the LocalStore layout).

::

    <root>/<record>/<task>/<modality>/...                 acquired data
    <root>/<record>/derivatives/<outputs>                 what scripts wrote
    <root>/<record>/derivatives/.provenance/<path>.json   a local derivative's provenance
    <root>/<record>/derivatives/.pending/<path>.json      a result waiting for its upload
    <root>/<record>/derivatives/.staging/<host~pid~id>/   a running step's outputs
    <root>/<record>/derivatives/.logs/<step>.log          a step's log and traceback

``<path>`` is a derivative path ``name@pipeline``. Names starting with a dot are
Sinagot's own bookkeeping: :func:`list_files` never shows them as data.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DERIVATIVES_DIR",
    "LOGS_DIR",
    "PENDING_DIR",
    "PROVENANCE_DIR",
    "STAGING_DIR",
    "derivatives_dir",
    "list_files",
    "log_file",
    "pending_file",
]

DERIVATIVES_DIR = "derivatives"
PROVENANCE_DIR = ".provenance"
PENDING_DIR = ".pending"
STAGING_DIR = ".staging"
LOGS_DIR = ".logs"


def derivatives_dir(root: Path, record: str) -> Path:
    return root / record / DERIVATIVES_DIR


def pending_file(root: Path, record: str, path: str) -> Path:
    """Where a result of derivative ``path`` waits for its upload."""
    return derivatives_dir(root, record) / PENDING_DIR / f"{path}.json"


def log_file(root: Path, record: str, name: str) -> Path:
    """The file that receives the script logs and traceback of step ``name``."""
    return derivatives_dir(root, record) / LOGS_DIR / f"{name}.log"


def list_files(root: Path) -> tuple[str, ...]:
    """Visible files below ``root`` as sorted relative POSIX names (``("",)`` if it is a file)."""
    if root.is_file():
        return ("",)
    names: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        base = Path(directory).relative_to(root)
        names.extend((base / f).as_posix() for f in files if not f.startswith("."))
    return tuple(sorted(names))
