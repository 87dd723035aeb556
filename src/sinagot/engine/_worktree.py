"""The work tree of a run: where scripts read and write, and how its store sees it.

A dataset follows one of two layouts, decided from its scripts (:func:`detect_layout`):

- **records** (Sinagot's own): acquired data in ``<root>/<id>/<task>/<modality>/``,
  outputs under ``<root>/<id>/derivatives/``; the store's tree is the work tree.
- **free-form** (Sinagot 0.1's): PATH_IN and PATH_OUT relative to the dataset root with
  ``{id}`` and ``{task}`` anywhere, outputs where PATH_OUT says. A local 0.1 dataset is
  its own work tree (*in place*): inputs are read and outputs written where they are,
  and its store, under ``<root>/.sinagot/records/``, keeps only the bookkeeping
  (provenance, pending results, logs). Over a remote store, record ``<id>``'s files for
  task T and modality M are the entry ``T/M``: each PATH_IN's last component (a file, or
  a folder) is taken from it and placed where the pattern says; a step's derivative
  holds its outputs relative to the folder that holds them all (:func:`output_folder`:
  for a PATH_OUT, its last component).

In both, a derivative's provenance lists its outputs by name: relative to
``<id>/derivatives/`` in the records layout, to the root in the free-form one.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._layout import DERIVATIVES_DIR, LOGS_DIR, derivatives_dir
from .._report import StepKey
from ..config import Settings
from ..errors import ScriptError
from ._scripts import load_script, records_layout_problem

__all__ = [
    "STATUS_LOG_DIR",
    "WorkTree",
    "detect_layout",
    "in_place_store_root",
    "output_folder",
]

_log = logging.getLogger("sinagot.run")

# Sinagot 0.1's per-record logs (JSON lines) of a free-form dataset: LOG/<id>.log.
STATUS_LOG_DIR = "LOG"
_STATUS_LOG_NAME = "status.log"
# Where the store of a local 0.1 dataset keeps its bookkeeping, inside the dataset.
_IN_PLACE_STORE = Path(".sinagot") / "records"


def in_place_store_root(dataset_dir: Path) -> Path:
    """The folder where a local 0.1 dataset's store keeps provenance and logs."""
    return dataset_dir / _IN_PLACE_STORE


def output_folder(outputs: Iterable[str]) -> str:
    """The folder holding all of a free-form step's output paths (each a file or a folder):
    its derivative holds them relative to it, so one PATH_OUT is held by its last component."""
    parents = [posixpath.dirname(path) for path in outputs]
    return posixpath.commonpath(parents) if parents else ""


@dataclass(frozen=True, slots=True)
class WorkTree:
    """Where a run's scripts read and write (``root``), and in which layout.

    ``in_place``: a local free-form dataset, its own work tree (nothing is fetched, and
    outputs are not copied into its store).
    """

    root: Path
    freeform: bool = False
    in_place: bool = False

    def output_prefix(self, record: str) -> str:
        """What the work-tree path of a derivative output starts with, before its name."""
        return "" if self.freeform else f"{record}/{DERIVATIVES_DIR}/"

    def primary_entry(self, key: StepKey, local_path: str) -> str | None:
        """The acquired-data entry ("task/modality") an input of step ``key`` comes from,
        if the store provides it (None: it is read where it is)."""
        if self.in_place:
            return None
        if self.freeform:
            return f"{key.task}/{key.modality}"
        parts = local_path.split("/")
        if len(parts) < 3 or parts[1] == DERIVATIVES_DIR:
            return None
        return f"{parts[1]}/{parts[2]}"

    def status_log(self, store_root: Path, record: str) -> Path:
        """The record's status log (JSON lines): Sinagot 0.1's ``LOG/<id>.log`` in a
        free-form dataset, else one beside the steps' logs."""
        if self.freeform:
            return self.root / STATUS_LOG_DIR / f"{record}.log"
        return derivatives_dir(store_root, record) / LOGS_DIR / _STATUS_LOG_NAME


def detect_layout(settings: Settings) -> tuple[bool, str]:
    """Whether the dataset of ``settings`` is free-form (Sinagot 0.1's layout), and why.

    It is when a script of a task's modality has paths outside the records layout;
    scripts that cannot be loaded do not count (their steps fail on their own).
    """
    used = {m for task in settings.tasks.values() for m in task.modalities}
    for modality in settings.modalities.values():
        if modality.name not in used:
            continue
        names = dict.fromkeys(
            [*modality.scripts, *(n for s in modality.task_scripts.values() for n in s)]
        )
        for name in names:
            try:
                loaded = load_script(settings.script_file(modality.name, name), modality.name, name)
            except ScriptError:
                continue
            problem = records_layout_problem(loaded)
            if problem is not None:
                return True, f"{modality.name}/{name}: {problem}"
    return False, "every PATH_IN starts with {id}, every PATH_OUT with {id}/derivatives"
