"""Property-based tests of what reads names and config files written by people.

A config file and a name come from outside: whatever they hold, the reader answers
with settings or one ConfigError line (a name check with one UnsafeNameError line),
never another exception. Names the checks accept are safe where they go, and come
back unchanged from the quoting they go through.
"""

from __future__ import annotations

import math
import posixpath
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from foundation_support import write_project
from sinagot.config import load_settings, name_problem
from sinagot.connectors import validate_label, validate_relative_path
from sinagot.connectors.internals import file_name, quote_segment
from sinagot.demo import DEMO_CONFIG
from sinagot.errors import ConfigError, UnsafeNameError

FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# The demo config, plus the tables a daemon's config adds (an XNAT store, a daemon).
BASE_CONFIG = (
    DEMO_CONFIG
    + """
[store]
type = "xnat"
server = "https://xnat.example.org"
project = "PROJ"
user = "someone"
password = "secret"
race_condition_delay = 2.0
max_connections = 4

[daemon]
poll_interval = 5.0
max_concurrent_jobs = 2
max_attempts = 3
retry_backoff = 1.0

[notify]
urls = []
"""
)

# Text that stays inside the test's folder when read as a path (no "/", "~" or "\\").
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/~\\"), max_size=12
) | st.sampled_from(
    # What the project's folder holds, and names a file system refuses.
    ("sinagot.toml", "data", "scripts", ".", "", "x" * 300, "EEG", "xnat", "local")
)
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _toml_value(value: Any) -> str:
    """``value`` as TOML text (nested tables inline): a writer of our own because the test
    needs one of a few lines and tomllib only reads."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    pairs = ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items())
    return "{" + pairs + "}"


def _toml_string(text: str) -> str:
    # TOML's basic strings escape as JSON's do, but for the control characters JSON leaves.
    escaped = "".join(
        c
        if c.isprintable() and c not in '"\\'
        else f"\\u{ord(c):04x}"
        if ord(c) < 0x10000
        else f"\\U{ord(c):08x}"
        for c in text
    )
    return f'"{escaped}"'


def toml_text(document: dict[str, Any]) -> str:
    lines = [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in document.items() if not _table(v)]
    for key, table in document.items():
        if _table(table):
            lines.append(f"[{_toml_string(key)}]")
            lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _table(value: Any) -> bool:
    return isinstance(value, dict)


def test_the_toml_writer_writes_what_tomllib_reads() -> None:
    document = tomllib.loads(BASE_CONFIG)
    document["extra"] = {"a\nb": [1, 2.5, "é\x00", {"x": True}], "inf": math.inf}
    assert tomllib.loads(toml_text(document)) == document


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield write_project(tmp_path_factory.mktemp("fuzz"), config=BASE_CONFIG)


def _keys(document: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(document, dict):
        for key, value in document.items():
            yield (*prefix, key)
            yield from _keys(value, (*prefix, key))


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The base config with a few keys deleted, given other values, or added."""
    document = tomllib.loads(BASE_CONFIG)
    for _ in range(draw(st.integers(1, 4))):
        keys = sorted(_keys(document))
        path = draw(st.sampled_from(keys))
        *parents, last = path
        holder = document
        for key in parents:
            holder = holder[key]
        action = draw(st.sampled_from(("delete", "replace", "replace", "add")))
        if action == "delete":
            del holder[last]
        elif action == "replace":
            holder[last] = draw(_VALUES)
        elif isinstance(holder[last], dict):
            holder[last][draw(_TEXT)] = draw(_VALUES)
    return document


def _load_or_config_error(path: Path) -> None:
    try:
        load_settings(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc)


@FUZZ
@given(document=mutated_configs())
def test_a_mutated_config_loads_or_gives_one_config_error(
    project: Path, document: dict[str, Any]
) -> None:
    project.write_text(toml_text(document), encoding="utf-8")
    _load_or_config_error(project)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_config_gives_settings_or_one_config_error(project: Path, text: str) -> None:
    project.write_bytes(text.encode("utf-8", "surrogatepass"))
    _load_or_config_error(project)


# The keys that name a file or folder.
_PATH_KEYS = (
    ("path", "dataset"),
    ("path", "scripts"),
    ("store", "cache_dir"),
    ("daemon", "socket"),
    ("daemon", "state_dir"),
)


@FUZZ
@given(
    key=st.sampled_from(_PATH_KEYS),
    store=st.sampled_from(("xnat", "local")),
    text=_TEXT | st.lists(_TEXT, min_size=2, max_size=4).map("/".join),
)
def test_any_path_gives_settings_or_one_config_error(
    project: Path, key: tuple[str, str], store: str, text: str
) -> None:
    document = tomllib.loads(BASE_CONFIG)
    table, name = key
    document[table][name] = text
    document["store"]["type"] = store
    project.write_text(toml_text(document), encoding="utf-8")
    _load_or_config_error(project)


_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True).filter(
    lambda name: name_problem(name) is None
)


@FUZZ
@given(
    tasks=st.dictionaries(_NAMES, st.just(None), min_size=1, max_size=4),
    modalities=st.lists(_NAMES, min_size=1, max_size=3, unique=True),
    workers=st.integers(1, 64),
    attempts=st.integers(1, 100),
)
def test_valid_names_and_numbers_come_back_as_written(
    project: Path, tasks: dict[str, None], modalities: list[str], workers: int, attempts: int
) -> None:
    assume(not set(tasks) & set(modalities))  # a task and a modality never share a name
    document = tomllib.loads(BASE_CONFIG)
    document["tasks"] = {task: {"modalities": modalities} for task in tasks}
    document["modalities"] = {name: {"scripts": []} for name in modalities}
    document["dask"]["n_workers"] = workers
    document["daemon"]["max_attempts"] = attempts
    project.write_text(toml_text(document), encoding="utf-8")
    loaded = load_settings(project)
    assert list(loaded.tasks) == list(tasks)
    assert all(loaded.tasks[task].modalities == tuple(modalities) for task in tasks)
    assert list(loaded.modalities) == modalities
    assert loaded.dask.n_workers == workers
    assert loaded.daemon.max_attempts == attempts


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=80) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]*", fullmatch=True))
def test_a_task_name_is_an_identifier_or_has_a_problem(name: str) -> None:
    problem = name_problem(name)
    if problem is None:
        assert name.isidentifier()
    else:
        assert "\n" not in problem


def _one_line(exc: UnsafeNameError) -> None:
    assert str(exc) and "\n" not in str(exc)


_LABELS = st.text(max_size=300) | st.from_regex(
    r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,300}", fullmatch=True
)


@settings(max_examples=300, deadline=None)
@given(label=_LABELS)
def test_a_label_is_one_safe_path_component_or_unsafe(label: str) -> None:
    try:
        accepted = validate_label(label, "label")
    except UnsafeNameError as exc:
        _one_line(exc)
        return
    assert accepted == label
    assert PurePosixPath(label).name == label and label not in (".", "..")
    assert len(label.encode()) <= 255
    assert unquote(quote_segment(label)) == label
    assert "/" not in quote_segment(label)


_PATHS = st.lists(
    st.text(max_size=20) | st.sampled_from((".", "..", "")), min_size=1, max_size=6
).map("/".join) | st.text(max_size=60)


@settings(max_examples=300, deadline=None)
@given(name=_PATHS)
def test_a_relative_path_stays_in_its_folder_or_is_unsafe(name: str) -> None:
    try:
        accepted = validate_relative_path(name, "file name")
    except UnsafeNameError as exc:
        _one_line(exc)
        return
    assert accepted == name
    assert posixpath.normpath(name) == name
    assert not name.startswith(("/", "../")) and name != ".."
    # The server lists the file by its URI: the name read back from it is the same.
    uri = f"/data/experiments/E1/scans/1/resources/EEG/files/{quote(name, safe='/')}"
    assert file_name(uri, "") == name
