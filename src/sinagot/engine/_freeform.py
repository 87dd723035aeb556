"""Record ids of a local Sinagot 0.1 (free-form) dataset, found in its file names.

As Sinagot 0.1 did, the records of a unit (task T, modality M) are found from the
first script of the unit: each of its PATH_IN patterns, ``{task}`` set to T and
``{id}`` matching ``[records] id_pattern``, is matched against the dataset's paths.
``file_match = [whole, files]`` (``[modalities.M]``, else ``[records]``) says how:
``whole = false`` matches the pattern without its last component, ``files = true``
matches files only, ``false`` folders only; without ``file_match`` both match. A
dataset's ids are those of its units, in config order, each once.

The walk is bounded by the pattern: one directory listing per level and per
candidate, never below the pattern's depth, and hidden names are never records.
"""

from __future__ import annotations

import logging
import os
import re
import string
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..config import FileMatch, Settings
from ..errors import ScriptError
from ._scripts import load_script, spec_parts

__all__ = ["unit_ids", "units_ids"]

_log = logging.getLogger("sinagot.run")


def _part_regex(part: str, task: str, id_pattern: str, bound: str | None) -> re.Pattern[str]:
    """A regex matching one path component of a pattern; ``bound``: the id found so far."""
    regex = ""
    for literal, field, _, _ in string.Formatter().parse(part):
        regex += re.escape(literal)
        if field == "task":
            regex += re.escape(task)
        elif field == "id":
            regex += re.escape(bound) if bound is not None else f"(?P<id>{id_pattern})"
    return re.compile(regex)


def _has_id(part: str) -> bool:
    return any(field == "id" for _, field, _, _ in string.Formatter().parse(part))


def _visible(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(
            (e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _pattern_ids(
    root: Path, parts: tuple[str, ...], task: str, id_pattern: str, files: bool | None
) -> Iterator[str]:
    """Ids in the paths below ``root`` matching ``parts``; ``files``: files only (True),
    folders only (False), or both (None)."""
    # (folder reached, id bound on the way there)
    frontier: list[tuple[Path, str | None]] = [(root, None)]
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        reached: list[tuple[Path, str | None]] = []
        for folder, bound in frontier:
            if "{" not in part:
                candidate = folder / part
                if candidate.exists() and not candidate.name.startswith("."):
                    reached.append((candidate, bound))
                continue
            pattern = _part_regex(part, task, id_pattern, bound)
            for entry in _visible(folder):
                match = pattern.fullmatch(entry.name)
                if match is None:
                    continue
                found = bound if bound is not None or not _has_id(part) else match["id"]
                reached.append((Path(entry.path), found))
        frontier = reached
        if not last:
            frontier = [(p, b) for p, b in frontier if p.is_dir()]
    for path, bound in frontier:
        if bound is None:
            continue
        if files is None or path.is_file() == files:
            yield bound


def unit_ids(settings: Settings, root: Path, task: str, modality: str) -> list[str]:
    """The ids of the records with data for ``task`` and ``modality``, as Sinagot 0.1
    found them (see the module docstring)."""
    scripts = settings.modalities[modality].scripts_for(task)
    if not scripts:
        return []
    try:
        loaded = load_script(settings.script_file(modality, scripts[0]), modality, scripts[0])
    except ScriptError:
        # The script's steps report it; its unit shows no record meanwhile.
        return []
    match: FileMatch | None = settings.modalities[modality].file_match or settings.file_match
    ids: dict[str, None] = {}
    for parts in spec_parts(loaded.path_in):
        if match is not None and not match[0]:
            parts = parts[:-1]
        if not parts or not any(_has_id(p) for p in parts):
            continue
        files = None if match is None else match[1]
        ids.update(
            dict.fromkeys(_pattern_ids(root, parts, task, settings.id_pattern.pattern, files))
        )
    return list(ids)


def units_ids(settings: Settings, root: Path, units: Iterable[tuple[str, str]]) -> list[str]:
    """The ids of the records with data in any of ``units`` (task, modality), in order."""
    ids: dict[str, None] = {}
    for task, modality in units:
        ids.update(dict.fromkeys(unit_ids(settings, root, task, modality)))
    return list(ids)
