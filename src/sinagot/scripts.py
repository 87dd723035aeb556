"""Scripts: the ``Script`` template users subclass, and loading script files.

A script file ``<scripts>/<modality>/<name>.py`` defines ``class Script(ScriptTemplate)``
with ``PATH_IN`` / ``PATH_OUT`` (a tuple of path parts, or a dict of name -> tuple)
using the ``{id}`` and ``{task}`` placeholders, optional ``PARAMETERS`` and ``run()``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from ._layout import DERIVATIVES_DIR
from .errors import ScriptError

__all__ = [
    "LoadedScript",
    "PathSpec",
    "ScriptPaths",
    "ScriptTemplate",
    "format_paths",
    "load_script",
    "shape_paths",
]

PathSpec = tuple[str, ...] | Mapping[str, tuple[str, ...]]
PathValue = Path | dict[str, Path]

_PLACEHOLDERS = frozenset({"id", "task"})


@dataclass(frozen=True, slots=True)
class ScriptPaths:
    """``input`` / ``output`` have the shape of PATH_IN / PATH_OUT: a Path or a dict of Paths."""

    input: PathValue
    output: PathValue


class ScriptTemplate:
    """Base class of user scripts; subclass it as ``Script`` and implement :meth:`run`."""

    PATH_IN: ClassVar[PathSpec]
    PATH_OUT: ClassVar[PathSpec]
    PARAMETERS: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, *, id: str, task: str, path: ScriptPaths, logger: logging.Logger) -> None:
        self.id = id
        self.task = task
        self.path = path
        self.logger = logger

    def run(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}.run() must be implemented")


@dataclass(frozen=True, slots=True)
class LoadedScript:
    """A validated script file: its class, source hash, paths and parameters."""

    modality: str
    name: str
    file: Path
    source_md5: str
    cls: type[ScriptTemplate]
    path_in: PathSpec
    path_out: PathSpec
    parameters: Mapping[str, Any]


def _spec_parts(spec: PathSpec) -> list[tuple[str, ...]]:
    return [spec] if isinstance(spec, tuple) else list(spec.values())


def format_paths(spec: PathSpec, record_id: str, task: str) -> tuple[str, ...]:
    """Every path of ``spec`` as a POSIX path relative to the store's local root."""
    return tuple(
        "/".join(part.format(id=record_id, task=task) for part in parts)
        for parts in _spec_parts(spec)
    )


def shape_paths(spec: PathSpec, record_id: str, task: str, root: Path, skip: int = 0) -> PathValue:
    """``spec`` resolved under ``root`` (minus its first ``skip`` parts), in its declared shape."""

    def resolve(parts: tuple[str, ...]) -> Path:
        return root.joinpath(*(part.format(id=record_id, task=task) for part in parts[skip:]))

    if isinstance(spec, tuple):
        return resolve(spec)
    return {key: resolve(parts) for key, parts in spec.items()}


def _check_spec(file: Path, attribute: str, value: Any) -> PathSpec:
    def problem(text: str) -> ScriptError:
        return ScriptError(f"{file}: {attribute} {text}")

    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        spec: PathSpec = value
    elif isinstance(value, Mapping) and value:
        spec = {str(k): tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    else:
        raise problem("must be a tuple of path parts or a non-empty dict of name -> tuple")
    for parts in _spec_parts(spec):
        if not isinstance(parts, tuple) or not parts or not all(isinstance(p, str) for p in parts):
            raise problem(
                f"has {parts!r}: use a non-empty tuple of strings such as ('{{id}}', ...)"
            )
        if parts[0] != "{id}":
            raise problem(f"{parts!r} must start with '{{id}}': paths are relative to the dataset")
        for part in parts:
            fields = {f for _, f, _, _ in string.Formatter().parse(part) if f is not None}
            if fields - _PLACEHOLDERS:
                raise problem(
                    f"uses {sorted(fields - _PLACEHOLDERS)} in {part!r}: only {{id}} and {{task}} exist"
                )
            if part in ("", ".", "..") or "/" in part or "\\" in part:
                raise problem(f"has the part {part!r}: give one plain name per part")
    return spec


def load_script(file: Path, modality: str, name: str) -> LoadedScript:
    """Import ``file`` and validate its ``Script`` class; raise ScriptError naming the problem."""
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise ScriptError(
            f"{file}: cannot read the script ({exc.strerror}): check the file"
        ) from None
    source_md5 = hashlib.md5(source, usedforsecurity=False).hexdigest()
    # One module name per file version, so an edited script is really re-imported.
    module_name = f"sinagot_script_{modality}_{name}_{source_md5}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ScriptError(f"{file}: cannot be imported as Python: check the file name")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ScriptError(
                f"{file}: importing failed with {type(exc).__name__}: {exc}: fix the script"
            ) from exc
        sys.modules[module_name] = module
    cls = getattr(module, "Script", None)
    if not (isinstance(cls, type) and issubclass(cls, ScriptTemplate)):
        raise ScriptError(f"{file}: defines no 'class Script(ScriptTemplate)': add one")
    for attribute in ("PATH_IN", "PATH_OUT"):
        if not hasattr(cls, attribute):
            raise ScriptError(f"{file}: Script has no {attribute}: declare it")
    path_in = _check_spec(file, "PATH_IN", cls.PATH_IN)
    path_out = _check_spec(file, "PATH_OUT", cls.PATH_OUT)
    for parts in _spec_parts(path_out):
        if len(parts) < 3 or parts[1] != DERIVATIVES_DIR:
            raise ScriptError(
                f"{file}: PATH_OUT {parts!r} must start with ('{{id}}', '{DERIVATIVES_DIR}', ...)"
                " so outputs never overwrite acquired data"
            )
        if parts[2].startswith("."):
            raise ScriptError(f"{file}: PATH_OUT {parts!r} must not use a hidden name")
    if cls.run is ScriptTemplate.run:
        raise ScriptError(f"{file}: Script does not implement run(): add it")
    try:
        parameters = json.loads(json.dumps(dict(cls.PARAMETERS), sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ScriptError(
            f"{file}: PARAMETERS must be a JSON-compatible dict ({exc}): use plain values"
        ) from None
    return LoadedScript(
        modality=modality,
        name=name,
        file=file,
        source_md5=source_md5,
        cls=cls,
        path_in=path_in,
        path_out=path_out,
        parameters=MappingProxyType(parameters),
    )
