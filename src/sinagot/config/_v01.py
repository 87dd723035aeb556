"""Sinagot 0.1's config keys, read as ours: each one ours spells differently gets a note.

A 0.1 config (``dataset.toml``) runs unchanged. The keys 0.1 spelt otherwise are
rewritten into ours before validation, with one note line each (kept in
:attr:`Settings.notes`, logged when the dataset opens):

=====================================  ==============================================
Sinagot 0.1                            read as
=====================================  ==============================================
``[path] data``                        ``[path] dataset``
``[modalities.M] tasks_scripts.T``     ``[modalities.M.tasks.T] scripts``: the
                                       modality's scripts, then these (0.1 appended)
``[dask] scheduler.n_workers`` ...     ``[dask] n_workers`` ... (``mode = "local"``)
``[dask] scheduler.scheduler_address`` ``[dask] address`` (``mode = "distributed"``)
``[dask] asynchronous``                accepted; ``run()`` always waits for its steps
=====================================  ==============================================

The other 0.1 keys are ours as well (``[records] file_match``, ``[modalities.M]
file_match`` and ``models``, ``[log] name`` and ``format``) and an empty
``[modalities.M]`` is a modality without scripts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ._reader import Reader

__all__ = ["translate_v01"]

# [dask] scheduler.<key> of 0.1 (LocalCluster keyword arguments) -> our [dask] key.
_SCHEDULER_KEYS = {
    "n_workers": "n_workers",
    "threads_per_worker": "threads_per_worker",
    "processes": "processes",
    "scheduler_address": "address",
}


def translate_v01(reader: Reader, document: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``document`` with 0.1's spellings rewritten into ours, and a note for each."""
    result: dict[str, Any] = copy.deepcopy(dict(document))
    notes: list[str] = []
    _path(reader, result, notes)
    _modalities(reader, result, notes)
    _dask(reader, result, notes)
    return result, notes


def _table(reader: Reader, parent: Mapping[str, Any], key: str, name: str) -> dict[str, Any]:
    table = reader.table(parent, key, name)
    return table if isinstance(table, dict) else dict(table)


def _path(reader: Reader, document: dict[str, Any], notes: list[str]) -> None:
    path = _table(reader, document, "path", "path")
    if "data" not in path:
        return
    if "dataset" in path:
        raise reader.error(
            "path.data", "conflicts with path.dataset", "keep one of them (data is 0.1's name)"
        )
    path["dataset"] = path.pop("data")
    document["path"] = path
    notes.append(f"{reader.config_file}: path.data: Sinagot 0.1's name, read as path.dataset")


def _modalities(reader: Reader, document: dict[str, Any], notes: list[str]) -> None:
    modalities = _table(reader, document, "modalities", "modalities")
    for name in list(modalities):
        key = f"modalities.{name}"
        body = _table(reader, modalities, key, name)
        if "tasks_scripts" not in body:
            continue
        appended = _table(reader, body, f"{key}.tasks_scripts", "tasks_scripts")
        overrides = _table(reader, body, f"{key}.tasks", "tasks")
        shared = body.get("scripts", [])
        if not isinstance(shared, list):
            raise reader.error(f"{key}.scripts", f"got {shared!r}", 'use a list of names: ["a"]')
        for task, scripts in appended.items():
            if task in overrides:
                raise reader.error(
                    f"{key}.tasks_scripts.{task}",
                    f"conflicts with [{key}.tasks.{task}]",
                    "keep one of them (tasks_scripts is 0.1's name)",
                )
            if not isinstance(scripts, list):
                raise reader.error(
                    f"{key}.tasks_scripts.{task}", f"got {scripts!r}", 'use a list of names: ["a"]'
                )
            overrides[task] = {"scripts": [*shared, *scripts]}
            listed = ", ".join(map(str, overrides[task]["scripts"]))
            notes.append(
                f"{reader.config_file}: {key}.tasks_scripts.{task}: Sinagot 0.1's name, read as"
                f" [{key}.tasks.{task}] scripts = [{listed}] (the modality's scripts, then these)"
            )
        del body["tasks_scripts"]
        body["tasks"] = overrides
        modalities[name] = body
    if modalities:
        document["modalities"] = modalities


def _dask(reader: Reader, document: dict[str, Any], notes: list[str]) -> None:
    dask = _table(reader, document, "dask", "dask")
    if "asynchronous" in dask:
        asynchronous = dask.pop("asynchronous")
        if not isinstance(asynchronous, bool):
            raise reader.error("dask.asynchronous", f"got {asynchronous!r}", "set it to false")
        if asynchronous:
            notes.append(
                f"{reader.config_file}: dask.asynchronous: Sinagot 0.1's key, accepted; run()"
                " waits for its steps all the same"
            )
    if "scheduler" in dask:
        scheduler = dict(_table(reader, dask, "dask.scheduler", "scheduler"))
        mode = scheduler.pop("mode", "local")
        if mode not in ("local", "distributed"):
            raise reader.error(
                "dask.scheduler.mode", f"got {mode!r}", 'set it to "local" or "distributed"'
            )
        reader.check_keys("dask.scheduler", scheduler, tuple(_SCHEDULER_KEYS))
        if mode == "distributed" and "scheduler_address" not in scheduler:
            raise reader.error(
                "dask.scheduler.scheduler_address",
                "is missing for mode 'distributed'",
                'add scheduler_address = "tls://host:8786"',
            )
        del dask["scheduler"]
        read_as = []
        for old, new in _SCHEDULER_KEYS.items():
            if old in scheduler:
                if new in dask:
                    raise reader.error(
                        f"dask.scheduler.{old}",
                        f"conflicts with dask.{new}",
                        "keep one of them (scheduler.* is 0.1's name)",
                    )
                dask[new] = scheduler[old]
                read_as.append(f"{new} = {scheduler[old]!r}")
        notes.append(
            f"{reader.config_file}: dask.scheduler: Sinagot 0.1's table, read as [dask]"
            f" {', '.join(read_as) or '(defaults)'}"
        )
    if dask:
        document["dask"] = dask
