"""Scripts: the ``Script`` template users subclass, and loading script files.

A script file ``<scripts>/<modality>/<name>.py`` defines ``class Script(ScriptTemplate)``
with ``PATH_IN`` / ``PATH_OUT`` (a tuple of path parts, or a dict of name -> tuple)
relative to the dataset, with the ``{id}`` and ``{task}`` placeholders anywhere,
optional ``PARAMETERS`` and ``run()``. Which layout the paths follow (records
folders, or Sinagot 0.1's free-form one) is decided per dataset (see ``_worktree``).
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
from types import MappingProxyType, ModuleType
from typing import Any, ClassVar, TypeVar

from .._layout import DERIVATIVES_DIR
from ..errors import ScriptError

__all__ = [
    "LoadedScript",
    "PathSpec",
    "ScriptPaths",
    "ScriptTemplate",
    "format_paths",
    "load_script",
    "load_user_class",
    "records_layout_problem",
    "shape_paths",
    "spec_parts",
]

T = TypeVar("T")

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
        # Sinagot 0.1's template: a script without run() does nothing but say so (its
        # outputs, if they exist, are kept). The records layout refuses such a script.
        self.logger.info("Running ...")


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
    implements_run: bool = True


def spec_parts(spec: PathSpec) -> list[tuple[str, ...]]:
    return [spec] if isinstance(spec, tuple) else list(spec.values())


def format_paths(spec: PathSpec, record_id: str, task: str) -> tuple[str, ...]:
    """Every path of ``spec`` as a POSIX path relative to the store's local root."""
    return tuple(
        "/".join(part.format(id=record_id, task=task) for part in parts)
        for parts in spec_parts(spec)
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
    for parts in spec_parts(spec):
        if not isinstance(parts, tuple) or not parts or not all(isinstance(p, str) for p in parts):
            raise problem(
                f"has {parts!r}: use a non-empty tuple of strings such as ('{{id}}', ...)"
            )
        for part in parts:
            fields = {f for _, f, _, _ in string.Formatter().parse(part) if f is not None}
            if fields - _PLACEHOLDERS:
                raise problem(
                    f"uses {sorted(fields - _PLACEHOLDERS)} in {part!r}: only {{id}} and {{task}} exist"
                )
            if part in ("", ".", "..") or "/" in part or "\\" in part:
                raise problem(
                    f"has the part {part!r}: give one plain name per part (paths are relative"
                    " to the dataset, with {id} and {task} anywhere)"
                )
    return spec


def _import_file(file: Path, what: str, prefix: str) -> tuple[ModuleType, str]:
    """Import ``file`` (one module per version of its source) and its source's MD5."""
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise ScriptError(
            f"{file}: cannot read the {what} ({exc.strerror}): check the file"
        ) from None
    source_md5 = hashlib.md5(source, usedforsecurity=False).hexdigest()
    # One module name per file version, so an edited file is really re-imported.
    module_name = f"{prefix}_{source_md5}"
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
                f"{file}: importing failed with {type(exc).__name__}: {exc}: fix the {what}"
            ) from exc
        sys.modules[module_name] = module
    return module, source_md5


def load_user_class(file: Path, class_name: str, base: type[T]) -> type[T]:
    """The class ``class_name`` of ``file``, a subclass of ``base`` (Sinagot 0.1's custom
    models, ``<scripts>/<modality>/models/<kind>.py``)."""
    module, _ = _import_file(file, "model", f"sinagot_model_{file.parent.parent.name}_{file.stem}")
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ScriptError(
            f"{file}: defines no 'class {class_name}({base.__name__})': add it, or fix"
            " the name in the config's models"
        )
    return cls


def load_script(file: Path, modality: str, name: str) -> LoadedScript:
    """Import ``file`` and validate its ``Script`` class; raise ScriptError naming the problem."""
    module, source_md5 = _import_file(file, "script", f"sinagot_script_{modality}_{name}")
    cls = getattr(module, "Script", None)
    if not (isinstance(cls, type) and issubclass(cls, ScriptTemplate)):
        raise ScriptError(f"{file}: defines no 'class Script(ScriptTemplate)': add one")
    for attribute in ("PATH_IN", "PATH_OUT"):
        if not hasattr(cls, attribute):
            raise ScriptError(f"{file}: Script has no {attribute}: declare it")
    path_in = _check_spec(file, "PATH_IN", cls.PATH_IN)
    path_out = _check_spec(file, "PATH_OUT", cls.PATH_OUT)
    for parts in spec_parts(path_out):
        if any(part.startswith(".") for part in parts):
            raise ScriptError(
                f"{file}: PATH_OUT {parts!r} must not use a hidden name: those are Sinagot's own"
            )
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
        implements_run=cls.run is not ScriptTemplate.run,
    )


def records_layout_problem(script: LoadedScript) -> str | None:
    """Why the paths of ``script`` do not follow the records layout (inputs ``{id}/...``,
    outputs ``{id}/derivatives/...``), or None if they do."""
    for parts in spec_parts(script.path_in):
        if parts[0] != "{id}":
            return f"PATH_IN {parts!r} does not start with '{{id}}'"
    for parts in spec_parts(script.path_out):
        if len(parts) < 3 or parts[:2] != ("{id}", DERIVATIVES_DIR):
            return f"PATH_OUT {parts!r} does not start with ('{{id}}', '{DERIVATIVES_DIR}', ...)"
    return None
